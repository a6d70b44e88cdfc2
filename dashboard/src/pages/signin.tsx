// Signing in: the operator pastes a token; the server's whoami says whether it is good and which role it has.
import { useState } from "preact/hooks";
import { Api, type ApiError } from "../api/client";
import type { WhoAmI } from "../api/types";
import type { Session } from "../components/session";

/** What to tell an operator whose token was refused. */
function refusal(e: ApiError): string {
  if (e.status === 401) return `This token was refused: ${e.message}.`;
  if (e.status === 403) return `This is not an operator token: ${e.message}.`;
  if (e.status === 429) return `Too many failed sign-ins from this address: ${e.message}.`;
  return `Could not sign in: ${e.message}.`;
}

/**
 * Asks the server who the token is; rejects with the server's ApiError. `onRefused` is called when the server
 * later refuses the token (revoked, expired): the session ends with the reason.
 */
export async function signIn(token: string, onRefused: (why: string) => void): Promise<Session> {
  const api = new Api(token, (e) => onRefused(`Signed out: ${e.message}.`));
  const who = await api.get<WhoAmI>("/whoami");
  return { api, who };
}

export function SignIn({ onSignedIn, onRefused, notice }: { onSignedIn: (s: Session, token: string) => void; onRefused: (why: string) => void; notice?: string | undefined }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState<ApiError>();
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    const t = token.trim();
    if (!t) return;
    setBusy(true);
    try {
      onSignedIn(await signIn(t, onRefused), t);
    } catch (err) {
      setError(err as ApiError);
      setBusy(false);
    }
  };
  return (
    <main class="signin">
      <h1>esp32-ota</h1>
      <form onSubmit={(e) => void submit(e)} aria-label="sign in">
        <label>
          Operator token
          <input type="password" name="token" autocomplete="off" spellcheck={false} value={token} onInput={(e) => setToken(e.currentTarget.value)} />
        </label>
        <p class="muted small">
          Paste a token made with <code>ota token create --role viewer|releaser|admin</code>. It is kept in this tab only and sent to this server alone.
        </p>
        <button type="submit" disabled={busy || !token.trim()}>
          Sign in
        </button>
      </form>
      {notice && !error ? <p class="muted">{notice}</p> : null}
      {error ? (
        <p class="error" role="alert">
          {refusal(error)} <code>{error.code}</code>
        </p>
      ) : null}
    </main>
  );
}
