"""only-errors in Python: an operator written as one function. Keeps the
records whose value contains ``error``, unchanged (``weir.map`` is the same
for a new value). The Rust version is plugins/only-errors."""

import weir_sdk as weir


@weir.filter
def only_errors(record):
    return b"error" in record.value


Handler = weir.export(only_errors)
