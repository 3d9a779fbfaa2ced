"""Type stubs of the native core, hopgate._native (rust/python)."""

from typing import Iterable, Optional, Sequence, Union, final

import numpy as np
import numpy.typing as npt
from typing_extensions import Buffer

from typing import NoReturn

_BytesLike = Union[bytes, bytearray, memoryview, npt.NDArray[np.uint8], Buffer]
_Offsets = Union[npt.NDArray[np.int64], npt.NDArray[np.int32], Sequence[int]]
_Batch = Union[Sequence[_BytesLike], _BytesLike]

__all__ = [
    "Chain",
    "Link",
    "MAX_CAPS",
    "MAX_CHAIN_LEN",
    "MAX_LINKS",
    "PARALLEL_THRESHOLD",
    "SigningKey",
    "blake3_many",
    "code_names",
    "sha256_many",
    "verify",
    "verify_batch",
    "verify_chains",
]

PARALLEL_THRESHOLD: int
MAX_CHAIN_LEN: int
MAX_LINKS: int
MAX_CAPS: int

@final
class SigningKey:
    @staticmethod
    def generate() -> SigningKey: ...
    @staticmethod
    def from_seed(seed: _BytesLike) -> SigningKey: ...
    @property
    def public_key(self) -> bytes: ...
    def seed(self) -> bytes: ...
    def sign(self, msg: _BytesLike) -> bytes: ...
    def __copy__(self) -> NoReturn: ...
    def __deepcopy__(self, _memo: object) -> NoReturn: ...
    def __reduce__(self) -> NoReturn: ...

@final
class Link:
    @property
    def kind(self) -> int: ...
    @property
    def issuer(self) -> Optional[bytes]: ...
    @property
    def session_id(self) -> Optional[bytes]: ...
    @property
    def prev_sig(self) -> Optional[bytes]: ...
    @property
    def holder(self) -> bytes: ...
    @property
    def not_before(self) -> int: ...
    @property
    def not_after(self) -> int: ...
    @property
    def max_depth(self) -> int: ...
    @property
    def budget(self) -> int: ...
    @property
    def unit(self) -> str: ...
    @property
    def nonce(self) -> bytes: ...
    @property
    def caps(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def meta_digest(self) -> bytes: ...
    @property
    def body(self) -> bytes: ...
    @property
    def signature(self) -> bytes: ...
    @property
    def revocation_id(self) -> bytes: ...

@final
class Chain:
    @staticmethod
    def grant(
        issuer_sk: SigningKey,
        holder_pk: _BytesLike,
        caps: Sequence[tuple[str, str]],
        budget: int,
        unit: str,
        not_before: int,
        not_after: int,
        max_depth: int,
        session_id: Optional[_BytesLike] = None,
        nonce: Optional[_BytesLike] = None,
        meta_digest: Optional[_BytesLike] = None,
    ) -> Chain: ...
    def delegate(
        self,
        holder_sk: SigningKey,
        next_pk: _BytesLike,
        caps: Optional[Sequence[tuple[str, str]]] = None,
        budget: Optional[int] = None,
        unit: Optional[str] = None,
        not_before: Optional[int] = None,
        not_after: Optional[int] = None,
        max_depth: Optional[int] = None,
        nonce: Optional[_BytesLike] = None,
        meta_digest: Optional[_BytesLike] = None,
    ) -> Chain: ...
    def invoke(
        self,
        holder_sk: SigningKey,
        ability: str,
        resource: str,
        cost: int,
        nonce: Optional[_BytesLike] = None,
        timestamp: Optional[int] = None,
        payload: Optional[_BytesLike] = None,
    ) -> bytes: ...
    @staticmethod
    def from_bytes(data: _BytesLike) -> Chain: ...
    @staticmethod
    def from_text(text: str) -> Chain: ...
    def to_text(self) -> str: ...
    def __bytes__(self) -> bytes: ...
    def __len__(self) -> int: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...
    @property
    def links(self) -> list[Link]: ...
    @property
    def issuer(self) -> bytes: ...
    @property
    def holder(self) -> bytes: ...
    @property
    def session_id(self) -> bytes: ...
    @property
    def tail_signature(self) -> bytes: ...
    @property
    def digest(self) -> bytes: ...
    @property
    def revocation_ids(self) -> list[bytes]: ...

def verify(msg: _BytesLike, sig: _BytesLike, pk: _BytesLike) -> bool: ...
def verify_batch(
    msgs: _Batch, sigs: _Batch, pks: _Batch, *, offsets: Optional[_Offsets] = None
) -> npt.NDArray[np.bool_]: ...
def verify_chains(
    chains: Union[Sequence[Union[_BytesLike, Chain]], _BytesLike],
    trusted: Iterable[_BytesLike],
    now: Optional[int] = None,
    session: Optional[_BytesLike] = None,
    revoked: Optional[Iterable[_BytesLike]] = None,
    *,
    offsets: Optional[_Offsets] = None,
) -> npt.NDArray[np.uint8]: ...
def blake3_many(data: _Batch, offsets: Optional[_Offsets] = None) -> npt.NDArray[np.uint8]: ...
def sha256_many(data: _Batch, offsets: Optional[_Offsets] = None) -> npt.NDArray[np.uint8]: ...
def code_names() -> list[tuple[int, str]]: ...
