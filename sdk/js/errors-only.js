// errors-only.js: a weir operator in JavaScript that keeps records whose
// value contains "error". Build it into a component with `npm run build`
// (componentize-js, from npm), then copy errors-only.wasm to a plugin-dir.
function* records(buf) {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let at = 0;
  while (at < buf.length) {
    const ts = dv.getBigInt64(at, true), klen = dv.getUint32(at + 8, true);
    const vlen = dv.getUint32(at + 12, true), hlen = dv.getUint32(at + 16, true);
    const keyLen = klen === 0xffffffff ? 0 : klen, start = at;
    at += 20 + keyLen + vlen + hlen;
    yield { frame: buf.subarray(start, at), value: buf.subarray(start + 20 + keyLen, start + 20 + keyLen + vlen) };
  }
}
export const handler = {
  open(info) {},
  process(input) {
    const kept = [...records(input)].filter(r => new TextDecoder().decode(r.value).includes("error"));
    const out = new Uint8Array(kept.reduce((n, r) => n + r.frame.length, 0));
    let at = 0;
    for (const r of kept) { out.set(r.frame, at); at += r.frame.length; }
    return { records: out };
  },
  onTimer(fired) { return { records: new Uint8Array() }; },
  close() { return new Uint8Array(); },
};
