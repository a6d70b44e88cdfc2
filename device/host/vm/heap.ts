// Reads the DeviceScript VM's garbage-collected heap from outside, to measure how much of it the agent uses.
//
// Layout (runtime/devicescript/gc_alloc.c, 32-bit WASM): the GC heap is one chunk
//   { next: ptr, end: ptr, blocks... }  preceded by the gc struct whose `first_chunk` (second word) points
// at it. Every block starts with a header word: tag in the top byte, size in words in the low 24 bits.
// Free blocks have tag 1; the chunk ends with a block tagged FINAL (0x4f) of size 1.
// Nothing here writes to VM memory.

const TAG_FREE = 0x1;
const FINAL_HEADER = (0x4f << 24) | 1;

export interface HeapChunk {
  start: number;
  end: number;
}

export interface HeapUse {
  /** Bytes in live or not-yet-collected blocks. */
  used: number;
  free: number;
  total: number;
  blocks: number;
}

function words(heap: Uint8Array): Uint32Array {
  return new Uint32Array(heap.buffer, heap.byteOffset, heap.byteLength >>> 2);
}

/**
 * Finds the GC heap chunk: null before the program has started (there is none yet); throws if there are
 * several (the VM's layout is not what this code expects).
 */
export function findHeap(heap: Uint8Array): HeapChunk | null {
  const m = words(heap);
  const found: HeapChunk[] = [];
  for (let i = 0; i < m.length; i++) {
    if (m[i] !== FINAL_HEADER) continue;
    const end = i * 4;
    // chunk.end == end, chunk.next == 0, and gc.first_chunk (6 words before) == chunk
    for (let j = i - 1; j > 6 && j > i - 65536; j--) {
      if (m[j] === end && m[j - 1] === 0 && m[j - 6] === (j - 1) * 4) {
        const c = { start: (j - 1) * 4, end };
        if (walk(heap, c)) found.push(c);
      }
    }
  }
  if (found.length > 1) throw new Error(`expected one DeviceScript GC heap, found ${found.length}`);
  return found[0] ?? null;
}

/** Sums the blocks; null if the chunk does not walk cleanly to its end. */
export function walk(heap: Uint8Array, c: HeapChunk): HeapUse | null {
  const m = words(heap);
  let p = c.start + 8;
  let used = 0;
  let free = 0;
  let blocks = 0;
  while (p < c.end) {
    const h = m[p >>> 2]!;
    const size = (h & 0xffffff) * 4;
    if (size === 0) return null;
    if (((h >>> 24) & 0xf) === TAG_FREE) free += size;
    else used += size;
    blocks++;
    p += size;
  }
  if (p !== c.end) return null;
  return { used, free, total: used + free, blocks };
}
