"""fixture-misbehave: a Python plugin that misbehaves, for the host's tests.

One component for the three ways a Python operator can go wrong, chosen by
``mode`` in its config (a Python build takes a minute, so the tests build
one):

- ``raise``: forwards ``after`` records, then raises ``ValueError`` (not a
  ``weir_sdk.Error``): weir reports it with its message, file and line.
- ``loop``: the first record never returns; the host's CPU deadline stops it.
- ``hog``: the first record allocates 1 MiB blocks and keeps them until the
  host's memory limit stops the instance.

```toml
[[operators]]
name = "boom"
plugin = "fixture-misbehave"
config = { mode = "raise", after = 5 }
```
"""

import weir_sdk as weir


class Misbehave(weir.Operator):
    def open(self, config, info):
        self.mode = config.get("mode")
        if self.mode not in ("raise", "loop", "hog"):
            raise weir.Error('`mode` must be "raise", "loop" or "hog"')
        self.after = config.get("after", 0)
        self.seen = 0
        self.hoard = []

    def process(self, record, out, ctx):
        index = self.seen
        self.seen += 1
        if self.mode == "loop":
            spins = 0
            while True:
                spins += 1
        if self.mode == "hog":
            while True:
                block = bytearray(1 << 20)
                for page in range(0, len(block), 4096):
                    block[page] = 1
                self.hoard.append(block)
        if index >= self.after:
            raise ValueError(f"fixture-misbehave: deliberate exception on record {index}")
        out.forward(record)


Handler = weir.export(Misbehave)
