// The operator dashboard: sign in with a token, then pages picked by the URL's fragment (#/devices, …), so the
// server serves one page and no token or filter ever reaches its logs.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import type { ApiError } from "./api/client";
import { may, type Role } from "./api/types";
import { savedToken, SessionContext, type Session } from "./components/session";
import { Audit } from "./pages/audit";
import { DevicePage, Devices } from "./pages/devices";
import { Firmware } from "./pages/firmware";
import { Overview } from "./pages/overview";
import { Releases } from "./pages/releases";
import { RolloutPage, Rollouts } from "./pages/rollouts";
import { SignIn, signIn } from "./pages/signin";

const NAV: { href: string; label: string; role: Role }[] = [
  { href: "#/", label: "Fleet", role: "viewer" },
  { href: "#/devices", label: "Devices", role: "viewer" },
  { href: "#/firmware", label: "Firmware", role: "viewer" },
  { href: "#/releases", label: "Releases", role: "viewer" },
  { href: "#/rollouts", label: "Rollouts", role: "viewer" },
  { href: "#/audit", label: "Audit log", role: "admin" },
];

/** Documents the server publishes beside the dashboard, linked in the footer. */
const LINKS: { href: string; label: string }[] = [{ href: "/api/v1/openapi.json", label: "OpenAPI document" }];

function useHash(): string {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return hash;
}

function Route({ hash, role }: { hash: string; role: Role }) {
  const [path = "/", search = ""] = hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  switch (parts[0]) {
    case undefined:
      return <Overview />;
    case "devices":
      return parts[1] ? <DevicePage id={parts[1]} /> : <Devices key={search} query={new URLSearchParams(search)} />;
    case "firmware":
      return <Firmware />;
    case "releases":
      return <Releases />;
    case "rollouts":
      return parts[1] ? <RolloutPage id={parts[1]} /> : <Rollouts />;
    case "audit":
      return may(role, "admin") ? <Audit /> : <p class="error">The audit log needs the admin role.</p>;
    default:
      return <p class="error">No page {path}.</p>;
  }
}

function Shell({ session, onSignOut }: { session: Session; onSignOut: () => void }) {
  const hash = useHash();
  const current = "#/" + (hash.replace(/^#\/?/, "").split(/[/?]/)[0] ?? "");
  return (
    <SessionContext.Provider value={session}>
      <header>
        <h1>
          <a href="#/">esp32-ota</a>
        </h1>
        <nav>
          {NAV.filter((n) => may(session.who.role, n.role)).map((n) => (
            <a key={n.href} href={n.href} class={current === n.href ? "active" : ""}>
              {n.label}
            </a>
          ))}
        </nav>
        <div class="who" data-role={session.who.role}>
          {session.who.subject} <span class="badge role">{session.who.role}</span>
          <button type="button" class="link" onClick={onSignOut}>
            Sign out
          </button>
        </div>
      </header>
      <main>
        <Route hash={hash} role={session.who.role} />
      </main>
      <footer>
        {LINKS.map((l) => (
          <a key={l.href} href={l.href}>
            {l.label}
          </a>
        ))}
      </footer>
    </SessionContext.Provider>
  );
}

function App() {
  const [session, setSession] = useState<Session | null>(null);
  const [restoring, setRestoring] = useState(() => savedToken.get() !== null);
  const [notice, setNotice] = useState<string>();
  const signOut = (why?: string) => {
    savedToken.clear();
    setSession(null);
    setNotice(why);
  };
  useEffect(() => {
    const token = savedToken.get();
    if (!token) return;
    signIn(token, signOut).then(
      (s) => {
        setSession(s);
        setRestoring(false);
      },
      (e: ApiError) => {
        signOut(`Signed out: ${e.message}.`);
        setRestoring(false);
      },
    );
  }, []);
  if (restoring) return <p class="muted">Signing in…</p>;
  if (!session) {
    return (
      <SignIn
        notice={notice}
        onRefused={signOut}
        onSignedIn={(s, token) => {
          savedToken.set(token);
          setSession(s);
        }}
      />
    );
  }
  return (
    <Shell session={session} onSignOut={() => signOut()} />
  );
}

render(<App />, document.getElementById("app")!);
