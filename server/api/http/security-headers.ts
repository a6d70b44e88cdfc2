// Security headers for every answer, in one place (helmet): the APIs get the strictest content security policy
// (they serve no pages); the dashboard's page and files get one that lets it load its own script, style sheet and
// images and call this server's API, and nothing else: no inline script or style, no other origin.
import type { RequestHandler } from "express";
import helmet from "helmet";

/** The dashboard's page and the folder of its files (server/api/dashboard/router.ts serves them). */
export const DASHBOARD_PAGE = "/";
export const DASHBOARD_ASSETS = "/assets";

const isDashboard = (path: string) => path === DASHBOARD_PAGE || path.startsWith(DASHBOARD_ASSETS + "/");

export function securityHeaders(): RequestHandler {
  const api = helmet({ contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } } });
  const dashboard = helmet({
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        defaultSrc: ["'self'"],
        scriptSrc: ["'self'"],
        styleSrc: ["'self'"],
        imgSrc: ["'self'"],
        connectSrc: ["'self'"],
        objectSrc: ["'none'"],
        baseUri: ["'none'"],
        formAction: ["'none'"],
        frameAncestors: ["'none'"],
      },
    },
    // The token is pasted, never in a URL; still, no page of it is named to anyone.
    referrerPolicy: { policy: "no-referrer" },
  });
  return (req, res, next) => (isDashboard(req.path) ? dashboard : api)(req, res, next);
}
