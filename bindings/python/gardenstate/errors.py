"""The exceptions of the gardenstate package.

Every error status of the C ABI (a gds_status of 10 or more) is raised as a GardenstateError
subclass carrying `code` (the status number), `name` (GDS_ERR_...) and `detail` (the
library's gds_last_error_message(): what was expected, what was found, what to do).
Outcomes (GDS_NOT_FOUND) are not errors: they come back as None or False.

Errors that are also a standard Python category inherit it too, so generic code still
catches them: a too-long key is a ValueError, a missing segment a FileNotFoundError, and so on.
"""

from __future__ import annotations


class GardenstateError(Exception):
    """An error status from libgardenstate (or from loading it)."""

    code: int | None = None

    def __init__(self, message: str, code: int | None = None, name: str | None = None,
                 detail: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.name = name
        self.detail = detail


class LibraryNotFoundError(GardenstateError, ImportError):
    """libgardenstate.so could not be found or loaded."""


class AbiMismatchError(GardenstateError, ImportError):
    """The loaded libgardenstate has another ABI version than this package was written for."""


class StoreClosedError(GardenstateError, ValueError):
    """An operation on a Store after close()."""


# Conditional writes (10s)
class ExistsError(GardenstateError):
    """add(): the key is already present (GDS_ERR_EXISTS)."""
    code = 10


class VersionMismatchError(GardenstateError):
    """compare_and_set(): the entry is at another version (GDS_ERR_VERSION_MISMATCH)."""
    code = 11


class LockedError(GardenstateError):
    """lock(): another lock id holds the entry (GDS_ERR_LOCKED); see lock_id and age_ms."""
    code = 12
    lock_id: int = 0
    age_ms: int = 0


class LockMismatchError(GardenstateError):
    """unlock()/set_and_unlock(): the lock id no longer holds the entry (GDS_ERR_LOCK_MISMATCH)."""
    code = 13


class ReadOnlyError(GardenstateError):
    """A write on a segment in replica or fenced mode (GDS_ERR_READ_ONLY)."""
    code = 14


# Capacity and sizes (20s)
class FullError(GardenstateError):
    """The segment is full (one of the subclasses says which resource)."""


class FullIndexError(FullError):
    """More live entries than max_entries (GDS_ERR_FULL_INDEX)."""
    code = 20


class FullHeapError(FullError):
    """capacity_bytes exhausted (GDS_ERR_FULL_HEAP)."""
    code = 21


class FullClientsError(FullError):
    """Every client slot is taken by a live thread: max_clients (GDS_ERR_FULL_CLIENTS)."""
    code = 22


class KeyLengthError(GardenstateError, ValueError):
    """The key is empty or longer than the segment's max_key (GDS_ERR_KEY_LENGTH)."""
    code = 23


class ValueTooLargeError(GardenstateError, ValueError):
    """The value is longer than the segment's max_value (GDS_ERR_VALUE_LENGTH)."""
    code = 24


class BufferTooSmallError(GardenstateError):
    """GDS_ERR_BUFFER_TOO_SMALL (handled inside get(); never raised by the Store API)."""
    code = 25


class FeedOverflowError(GardenstateError):
    """The change feed overwrote entries past the cursor (GDS_ERR_FEED_OVERFLOW)."""
    code = 26


# The segment (30s)
class SegmentIOError(GardenstateError, OSError):
    """An operating-system call failed, or create() found no room to reserve the segment
    (GDS_ERR_IO)."""
    code = 30


class SegmentExistsError(GardenstateError, FileExistsError):
    """create(): a segment of that name exists already (GDS_ERR_SEGMENT_EXISTS)."""
    code = 31


class NoSegmentError(GardenstateError, FileNotFoundError):
    """attach(): no segment of that name exists (GDS_ERR_NO_SEGMENT)."""
    code = 32


class SegmentPermissionError(GardenstateError, PermissionError):
    """The operating system denied access to the segment file (GDS_ERR_PERMISSION)."""
    code = 33


class IncompatibleError(GardenstateError):
    """Segment of an incompatible build, open() with other options, or a segment from before
    the last reboot or of another time namespace (GDS_ERR_INCOMPATIBLE)."""
    code = 34


class CorruptError(GardenstateError):
    """The segment is damaged: destroy and recreate it (GDS_ERR_CORRUPT)."""
    code = 35


class NotReadyError(GardenstateError):
    """The segment was still being initialized when the wait ran out (GDS_ERR_NOT_READY)."""
    code = 36


class InvalidOptionsError(GardenstateError, ValueError):
    """Options out of range, or a bad segment name (GDS_ERR_INVALID_OPTIONS)."""
    code = 37


class RefusedError(GardenstateError):
    """The segment file is a symlink, not a regular file, another user's, or sparse (its
    memory not all reserved) (GDS_ERR_REFUSED)."""
    code = 38


class DestroyedError(GardenstateError):
    """The segment was destroyed while this store was attached (GDS_ERR_DESTROYED): nothing
    written to it would be read again. Close the store and open it again (``Store.open``
    creates or attaches the segment now under the name)."""
    code = 39


# The call itself (40s)
class NullArgumentError(GardenstateError):
    """A required pointer was NULL (GDS_ERR_NULL_ARGUMENT): a bug in this binding."""
    code = 40


class InvalidArgumentError(GardenstateError, ValueError):
    """An argument out of its domain (GDS_ERR_INVALID_ARGUMENT)."""
    code = 41


class PanicError(GardenstateError):
    """The library panicked (GDS_ERR_PANIC): a bug, please report it with the message."""
    code = 42


class OutOfMemoryError(GardenstateError, MemoryError):
    """A buffer for the caller could not be allocated (GDS_ERR_OUT_OF_MEMORY)."""
    code = 43


class UnknownError(GardenstateError):
    """GDS_ERR_UNKNOWN, or a code this package does not know (newer library)."""
    code = 49


BY_CODE: dict[int, type[GardenstateError]] = {
    cls.code: cls
    for cls in (
        ExistsError, VersionMismatchError, LockedError, LockMismatchError, ReadOnlyError,
        FullIndexError, FullHeapError, FullClientsError, KeyLengthError, ValueTooLargeError,
        BufferTooSmallError, FeedOverflowError, SegmentIOError, SegmentExistsError,
        NoSegmentError, SegmentPermissionError, IncompatibleError, CorruptError, NotReadyError,
        InvalidOptionsError, RefusedError, DestroyedError, NullArgumentError, InvalidArgumentError, PanicError,
        OutOfMemoryError, UnknownError,
    )
}
