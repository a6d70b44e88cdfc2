// Data from the API, read again every few seconds while the page shows it (live views) or once.
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import type { ApiError } from "../api/client";

export interface Polled<T> {
  data: T | undefined;
  error: ApiError | undefined;
  /** Reads again now (after an action). */
  reload: () => void;
}

/** Calls `load` now, whenever `key` changes, and every `everyMs` (0: once); keeps the last good answer on errors. */
export function usePoll<T>(load: () => Promise<T>, key: string, everyMs = 0): Polled<T> {
  const [data, setData] = useState<T>();
  const [error, setError] = useState<ApiError>();
  const loadRef = useRef(load);
  loadRef.current = load;
  const seq = useRef(0);
  const reload = useCallback(() => {
    const mine = ++seq.current;
    loadRef.current().then(
      (d) => {
        if (mine !== seq.current) return;
        setData(d);
        setError(undefined);
      },
      (e: ApiError) => {
        if (mine === seq.current) setError(e);
      },
    );
  }, []);
  useEffect(() => {
    setData(undefined);
    reload();
    if (!everyMs) return undefined;
    const t = setInterval(reload, everyMs);
    return () => clearInterval(t);
  }, [key, everyMs, reload]);
  return { data, error, reload };
}
