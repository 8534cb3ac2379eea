"""gardenstate: web session state in shared memory, shared by every worker process of a host.

A thin, pure-Python layer (ctypes) over libgardenstate's C ABI (include/gardenstate.h):

    from gardenstate import Store
    with Store.open("sessions", capacity_bytes=256 << 20, max_entries=100_000) as store:
        store.set(b"sid:4f2a", b"cart=3", sliding=20 * 60)
        store.get(b"sid:4f2a")          # b"cart=3", or None

The library is loaded (and its ABI version checked) on first use; see gardenstate._native for
where it is looked for. The Flask session provider is gardenstate.flask (needs Flask).
"""

from ._native import GDS_ABI_VERSION, lib_path
from .errors import (
    AbiMismatchError,
    BufferTooSmallError,
    CorruptError,
    DestroyedError,
    ExistsError,
    FeedOverflowError,
    FullClientsError,
    FullError,
    FullHeapError,
    FullIndexError,
    GardenstateError,
    IncompatibleError,
    InvalidArgumentError,
    InvalidOptionsError,
    KeyLengthError,
    LibraryNotFoundError,
    LockedError,
    LockMismatchError,
    NoSegmentError,
    NotReadyError,
    NullArgumentError,
    OutOfMemoryError,
    PanicError,
    ReadOnlyError,
    RefusedError,
    SegmentExistsError,
    SegmentIOError,
    SegmentPermissionError,
    StoreClosedError,
    UnknownError,
    ValueTooLargeError,
    VersionMismatchError,
)
from .store import (
    CheckReport,
    Entry,
    Info,
    Locked,
    Meta,
    ReplicationState,
    Role,
    Stats,
    Store,
    SweepReport,
    WriteMode,
    destroy,
    shm_dir,
    version,
)

__version__ = "0.1.0"

__all__ = [name for name in dir() if not name.startswith("_")]
