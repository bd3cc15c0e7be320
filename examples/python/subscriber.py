#!/usr/bin/env python3
"""Example subscriber for hookline's events (pika).

Declares a durable queue, binds it to <prefix>.events with topic patterns, and prints one
line per event (`<id> <type> <data>`), acking each after it is handled. Exits cleanly on
SIGINT (Ctrl-C) or SIGTERM.

Usage: subscriber.py [QUEUE [PATTERN...]]
The queue and patterns can also come from HOOKLINE_QUEUE and HOOKLINE_PATTERNS
(comma-separated), the broker from AMQP_URL and the exchange prefix from HOOKLINE_PREFIX.
"""

import json
import os
import signal
import sys

import pika

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2f"


def env(name, default):
    value = os.environ.get(name, "").strip()
    return value or default


def settings(argv):
    queue = argv[1] if len(argv) > 1 else env("HOOKLINE_QUEUE", "example-subscriber")
    patterns = argv[2:] or [
        p.strip() for p in env("HOOKLINE_PATTERNS", "#").split(",") if p.strip()
    ]
    exchange = env("HOOKLINE_PREFIX", "hookline") + ".events"
    return env("AMQP_URL", DEFAULT_URL), exchange, queue, patterns


def handle(channel, method, properties, body):
    try:
        event = json.loads(body)
    except ValueError as error:
        # Not an event: drop it rather than redeliver it forever.
        print(f"subscriber: skipping a message that is not JSON: {error}", file=sys.stderr)
        channel.basic_nack(method.delivery_tag, requeue=False)
        return
    # Handle the event here; use event["id"] as the idempotency key.
    data = json.dumps(event.get("data"), separators=(",", ":"), ensure_ascii=False)
    print(f'{event.get("id")} {event.get("type")} {data}', flush=True)
    channel.basic_ack(method.delivery_tag)


def stop(signum, frame):
    raise KeyboardInterrupt


def main(argv):
    url, exchange, queue, patterns = settings(argv)
    signal.signal(signal.SIGTERM, stop)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    # Durable: events routed to it wait while this app is down.
    channel.queue_declare(queue=queue, durable=True)
    for pattern in patterns:
        channel.queue_bind(queue=queue, exchange=exchange, routing_key=pattern)
    channel.basic_qos(prefetch_count=16)
    channel.basic_consume(queue=queue, on_message_callback=handle)  # manual ack
    print(
        f"Consuming {queue} (bound to {exchange} with {', '.join(patterns)}); Ctrl-C stops.",
        file=sys.stderr,
        flush=True,
    )
    try:
        channel.start_consuming()
    except KeyboardInterrupt:
        channel.stop_consuming()
    # Unacked deliveries go back to the queue when the connection closes.
    connection.close()
    print("Stopped.", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
