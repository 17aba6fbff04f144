"""Bit-packed export of a trained run (`bnnx export`): the file format and its writer.
`bnnx.export(config, run_dir)` calls `export_run`.

`bnnx.export.format` is the file: its entries, `Exported` and `unpack`, imported by every reader
(the packed engine, foreign-runtime exporters); `bnnx.export.writer` writes a run's export.
"""

from bnnx.callable_module import make_callable
from bnnx.export.format import (
                                FORMAT,
                                MANIFEST_KEY,
                                PACKED_ENCODINGS,
                                Exported,
                                export_bytes,
                                exported,
                                tensor_entries,
                                unpack,
                                write_export,
)
from bnnx.export.writer import export_run, export_with_folds

make_callable(__name__, "bnnx.export.writer:export_run")

__all__ = ["FORMAT", "MANIFEST_KEY", "PACKED_ENCODINGS", "Exported", "export_bytes", "export_run",
           "export_with_folds", "exported", "tensor_entries", "unpack", "write_export"]
