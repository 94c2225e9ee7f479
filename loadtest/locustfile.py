"""Locust load test for a kv server.

    KV_DATA=example.data locust -f loadtest/locustfile.py --host http://127.0.0.1:8000

Task mix (weights out of 100): 85 hits, 5 misses (404 counts as success),
2 malformed keys (400 counts as success), 8 batches of 50 keys. Keys are
sampled from the data file the server serves (KV_DATA), so hits are real hits.
Any other status, or a value that is not the file's, is a failure.
"""

from __future__ import annotations

import json
import os
import random
import uuid

from locust import FastHttpUser, between, events, task

SAMPLE = int(os.environ.get("KV_SAMPLE", "20000"))
BATCH = 50


def _load(path: str, limit: int) -> list[tuple[str, bytes]]:
    """Reservoir-sample `limit` records so a huge file costs one pass, bounded memory."""
    rnd = random.Random(11)
    sample: list[tuple[str, bytes]] = []
    with open(path, "rb") as f:
        for i, line in enumerate(f):
            rec = (line[:36].decode(), line[37:].rstrip(b"\n"))
            if len(sample) < limit:
                sample.append(rec)
            else:
                j = rnd.randrange(i + 1)
                if j < limit:
                    sample[j] = rec
    return sample


RECORDS: list[tuple[str, bytes]] = []


@events.init.add_listener
def _init(environment, **kwargs):
    path = os.environ.get("KV_DATA")
    if not path:
        raise SystemExit("set KV_DATA to the data file the server serves")
    RECORDS.extend(_load(path, SAMPLE))
    if not RECORDS:
        raise SystemExit(f"{path} holds no records")


class KVUser(FastHttpUser):
    wait_time = between(0, 0)

    @task(85)
    def hit(self):
        key, value = random.choice(RECORDS)
        with self.client.get(f"/v1/keys/{key}", name="/v1/keys/[hit]", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"hit: status {r.status_code}")
            elif r.content != value:
                r.failure(f"hit: wrong value for {key}")

    @task(5)
    def miss(self):
        with self.client.get(f"/v1/keys/{uuid.uuid4()}", name="/v1/keys/[miss]", catch_response=True) as r:
            if r.status_code == 404:
                r.success()
            else:
                r.failure(f"miss: status {r.status_code}")

    @task(2)
    def malformed(self):
        with self.client.get("/v1/keys/not-a-uuid-" + str(random.randrange(10**6)), name="/v1/keys/[malformed]", catch_response=True) as r:
            if r.status_code == 400:
                r.success()
            else:
                r.failure(f"malformed: status {r.status_code}")

    @task(8)
    def batch(self):
        picked = random.sample(RECORDS, min(BATCH, len(RECORDS)))
        body = json.dumps({"keys": [k for k, _ in picked]})
        with self.client.post(
            "/v1/batch", data=body, headers={"Content-Type": "application/json"}, name="/v1/batch[50]", catch_response=True
        ) as r:
            if r.status_code != 200:
                r.failure(f"batch: status {r.status_code}")
                return
            values = r.json().get("values", {})
            wrong = [k for k, v in picked if values.get(k, "").encode() != v]
            if wrong:
                r.failure(f"batch: {len(wrong)} wrong or missing values, e.g. {wrong[0]}")
