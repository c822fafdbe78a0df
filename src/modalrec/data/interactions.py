"""User-item interactions over internal indices, stored as CSR.

Rows are users ``0..n_users-1``, columns items ``0..n_items-1``. External ids live only in the
``Dataset`` id maps, so every matrix in the system shares one index space.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from modalrec.errors import DataError


@dataclass(frozen=True, eq=False)
class Interactions:
    """A CSR user-item matrix with optional ratings and timestamps per stored entry.

    ``indptr``/``indices`` follow scipy's CSR layout, with column indices sorted within each row and
    no duplicate (user, item) pair.
    """

    n_users: int
    n_items: int
    indptr: np.ndarray
    indices: np.ndarray
    ratings: np.ndarray | None = None
    timestamps: np.ndarray | None = None

    @classmethod
    def from_arrays(
        cls,
        users: np.ndarray,
        items: np.ndarray,
        n_users: int,
        n_items: int,
        ratings: np.ndarray | None = None,
        timestamps: np.ndarray | None = None,
    ) -> Interactions:
        """Build from parallel arrays; a repeated (user, item) pair is an error (dedup first)."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if users.shape != items.shape:
            raise DataError("users and items arrays differ in length")
        if len(users) and (users.min() < 0 or users.max() >= n_users):
            raise DataError(f"user index out of range [0, {n_users})")
        if len(items) and (items.min() < 0 or items.max() >= n_items):
            raise DataError(f"item index out of range [0, {n_items})")
        order = np.lexsort((items, users))
        users, items = users[order], items[order]
        if len(users) > 1:
            dup = (users[1:] == users[:-1]) & (items[1:] == items[:-1])
            if dup.any():
                k = int(np.argmax(dup))
                raise DataError(
                    f"duplicate interaction (user {users[k]}, item {items[k]})",
                    hint="deduplicate first (modalrec.data.filtering.deduplicate)",
                )
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
        r = None if ratings is None else np.asarray(ratings, dtype=np.float32)[order]
        t = None if timestamps is None else np.asarray(timestamps, dtype=np.int64)[order]
        return cls(n_users, n_items, indptr, items.astype(np.int32), r, t)

    @classmethod
    def empty_like(cls, other: Interactions) -> Interactions:
        return cls.from_arrays(np.empty(0), np.empty(0), other.n_users, other.n_items)

    # --- views -------------------------------------------------------------------------------
    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    @property
    def users(self) -> np.ndarray:
        """The user index of every stored entry (COO row array)."""
        return np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(self.indptr))

    @property
    def items(self) -> np.ndarray:
        return self.indices.astype(np.int64)

    def csr(self, values: str = "ones") -> sp.csr_matrix:
        """The matrix as scipy CSR with ``values`` 'ones' (implicit) or 'ratings'."""
        if values == "ratings":
            if self.ratings is None:
                raise DataError("these interactions have no ratings")
            data = self.ratings
        else:
            data = np.ones(self.nnz, dtype=np.float32)
        return sp.csr_matrix((data, self.indices, self.indptr), shape=(self.n_users, self.n_items))

    def user_items(self, user: int) -> np.ndarray:
        return self.indices[self.indptr[user] : self.indptr[user + 1]]

    def user_counts(self) -> np.ndarray:
        return np.diff(self.indptr)

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.indices, minlength=self.n_items)

    def to_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame({"user": self.users, "item": self.items})
        if self.ratings is not None:
            frame["rating"] = self.ratings
        if self.timestamps is not None:
            frame["timestamp"] = self.timestamps
        return frame

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, n_users: int, n_items: int) -> Interactions:
        return cls.from_arrays(
            frame["user"].to_numpy(),
            frame["item"].to_numpy(),
            n_users,
            n_items,
            frame["rating"].to_numpy() if "rating" in frame else None,
            frame["timestamp"].to_numpy() if "timestamp" in frame else None,
        )

    def select(self, mask: np.ndarray) -> Interactions:
        """The entries where the boolean ``mask`` (over stored entries) is true."""
        return Interactions.from_arrays(
            self.users[mask],
            self.items[mask],
            self.n_users,
            self.n_items,
            None if self.ratings is None else self.ratings[mask],
            None if self.timestamps is None else self.timestamps[mask],
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Interactions):
            return NotImplemented

        def same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
            return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))

        return (
            self.n_users == other.n_users
            and self.n_items == other.n_items
            and np.array_equal(self.indptr, other.indptr)
            and np.array_equal(self.indices, other.indices)
            and same(self.ratings, other.ratings)
            and same(self.timestamps, other.timestamps)
        )

    def __repr__(self) -> str:
        return f"Interactions(users={self.n_users}, items={self.n_items}, nnz={self.nnz})"
