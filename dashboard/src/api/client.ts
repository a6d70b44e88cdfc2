// The operator API from the browser: the token goes in the Authorization header of each request (never in a
// URL), errors become ApiError with the server's stable code and message.

/** An answer other than 2xx, or no answer at all (status 0). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly reason?: string,
  ) {
    super(message);
  }
}

interface ErrorBody {
  error?: { code?: string; message?: string; reason?: string };
}

async function errorOf(r: Response): Promise<ApiError> {
  let body: ErrorBody = {};
  try {
    body = (await r.json()) as ErrorBody;
  } catch {
    // not JSON: a proxy's page, say
  }
  return new ApiError(r.status, body.error?.code ?? "http_" + r.status, body.error?.message ?? r.statusText, body.error?.reason);
}

export class Api {
  constructor(
    private readonly token: string,
    /** Called when the server refuses the token itself (401): revoked or expired since signing in. */
    private readonly onRefused: (e: ApiError) => void = () => undefined,
  ) {}

  private refused(e: ApiError): ApiError {
    if (e.status === 401) this.onRefused(e);
    return e;
  }

  async call<T>(method: "GET" | "POST" | "PATCH", path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.token}`, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let r: Response;
    try {
      r = await fetch("/api/v1" + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store", credentials: "omit" });
    } catch (e) {
      throw new ApiError(0, "unreachable", `the server did not answer (${(e as Error).message})`);
    }
    if (!r.ok) throw this.refused(await errorOf(r));
    return (await r.json()) as T;
  }

  get<T>(path: string): Promise<T> {
    return this.call<T>("GET", path);
  }

  post<T>(path: string, body: unknown = {}): Promise<T> {
    return this.call<T>("POST", path, body);
  }

  /**
   * Uploads a file as multipart/form-data with XMLHttpRequest, whose upload events give the progress that fetch
   * does not; resolves with the answer's JSON.
   */
  upload<T>(path: string, file: File, onProgress: (sent: number, total: number) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/api/v1" + path);
      xhr.setRequestHeader("Authorization", `Bearer ${this.token}`);
      xhr.responseType = "json";
      xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
      xhr.onerror = () => reject(new ApiError(0, "unreachable", "the upload was cut off"));
      xhr.onload = () => {
        const body = xhr.response as (T & ErrorBody) | null;
        if (xhr.status >= 200 && xhr.status < 300 && body) resolve(body);
        else reject(this.refused(new ApiError(xhr.status, body?.error?.code ?? "http_" + xhr.status, body?.error?.message ?? xhr.statusText, body?.error?.reason)));
      };
      const form = new FormData();
      form.append("file", file, file.name);
      xhr.send(form);
    });
  }
}
