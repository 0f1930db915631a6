"""``redline deliveries``: the notification delivery log and replay, straight from the store."""

from __future__ import annotations

import json
import sys

from .settings import get_settings


def _store():
    from boundary.store import Store

    settings = get_settings()
    return Store(settings.database_url, data_dir=settings.data_dir)


def cmd_deliveries(args) -> int:
    from .delivery import delivery_view, replay

    store = _store()
    if args.deliveries_command == "replay":
        try:
            new_id = replay(store, args.id)
        except LookupError as err:
            print(f"redline: {err}", file=sys.stderr)
            return 2
        print(f"delivery {args.id} queued again as delivery {new_id}; a running service sends it within seconds")
        return 0
    with store.transaction(write=False) as tx:
        if args.deliveries_command == "show":
            row = tx.get_delivery(args.id)
            if row is None:
                print(f"redline: no delivery {args.id}", file=sys.stderr)
                return 2
            print(json.dumps(delivery_view(row, tx.list_attempts(args.id)), indent=1))
            return 0
        rows = [delivery_view(r) for r in tx.list_deliveries(state=args.state, boundary_id=args.boundary, limit=args.limit)]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for d in rows:
        error = f"  last error: {d['last_error']}" if d["last_error"] and d["state"] != "delivered" else ""
        print(f"{d['id']:>6}  {d['state']:<9} {d['attempts']:>2} tries  {d['channel']:<7} {d['event_type']:<30} {d['target']}  {d['event_at']}{error}")
    return 0


def add_deliveries_parser(commands) -> None:
    deliveries = commands.add_parser("deliveries", help="the notification delivery log (webhooks, emails) and replay")
    sub = deliveries.add_subparsers(dest="deliveries_command", required=True)
    listing = sub.add_parser("list", help="newest first")
    listing.add_argument("--state", choices=["pending", "delivered", "failed"])
    listing.add_argument("--boundary", help="only this boundary's events")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    show = sub.add_parser("show", help="one delivery with every attempt")
    show.add_argument("id", type=int)
    again = sub.add_parser("replay", help="send a delivery again (same event and webhook-id)")
    again.add_argument("id", type=int)
    for parser in (listing, show, again):
        parser.set_defaults(func=cmd_deliveries)
