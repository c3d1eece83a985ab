"""The ledger: usage events, authorizations and holds, the funding waterfall, idempotency, verification.

What can never happen:

- a settled call missing from the ledger, or in it twice (one settlement event per
  `(practice, request_id)`, enforced by a unique index);
- a micro-USD of cost in no pot: each event's allocations (included, credit, overage) add up to its
  cost; what nothing funds is overage, recorded, never dropped;
- a balance row that disagrees with the ledger: periods, grants and practice balances change only in
  the transaction that appends the events and allocations they summarize (`verify` checks it);
- in `strict` mode, posted cost above funding: an authorization is refused unless its whole estimate
  is available, and availability counts every open hold;
- a hold that lives forever: each ends settled, voided or expired (TTL plus one sweep).

The operations that keep it so are in `service` (authorize, settle, void, expire), the split of a
cost over the pots in `waterfall`, the O(1) state the hot path reads in `state`, and the check in
`verify`. Writers of one practice are serialized (`store.dialect.lock_practices`).
"""
