#!/bin/bash
# Token cost: 2 servers (2 workers each, 100k records), one without tokens and one with,
# 3 paired alternating rounds of wrk -t1 -c64 -d5s on random existing keys.
# Run in a scratch directory holding: b.kvt (kv gen 100000 --seed 7 -o b.data; kv build b.data -o b.kvt),
# tokens (a file with the line bench-token-0123456789abcdef, mode 0600), and plain.lua / token.lua:
# 20,000 keys of b.data, each request prebuilt as "GET /v1/keys/K HTTP/1.1\r\nHost: 127.0.0.1\r\n[Authorization: Bearer ...\r\n]\r\n",
# request() returning a random one (Host first: the fast path requires it).
KV=${KV:-kv}
$KV serve b.kvt --bind 127.0.0.1:18101 --workers 2 --log-level warning >plain.log 2>&1 &
P1=$!
$KV serve b.kvt --bind 127.0.0.1:18102 --workers 2 --log-level warning --read-token-file tokens >token.log 2>&1 &
P2=$!
sleep 4
curl -s -o /dev/null -w "plain %{http_code}\n" http://127.0.0.1:18101/v1/keys/8b4ae5f1-a941-46a0-956a-26afbccdafe5
curl -s -o /dev/null -w "token-less on token server %{http_code}\n" http://127.0.0.1:18102/v1/keys/8b4ae5f1-a941-46a0-956a-26afbccdafe5
curl -s -o /dev/null -w "token %{http_code}\n" -H "Authorization: Bearer bench-token-0123456789abcdef" http://127.0.0.1:18102/v1/keys/8b4ae5f1-a941-46a0-956a-26afbccdafe5
for r in 1 2 3; do
  order="plain token"; [ $r = 2 ] && order="token plain"
  for s in $order; do
    port=18101; [ $s = token ] && port=18102
    rps=$(wrk -t1 -c64 -d5s -s $s.lua http://127.0.0.1:$port | awk '/Requests\/sec/ {print $2}')
    echo "round $r $s $rps"
  done
done
curl -s -H "Authorization: Bearer bench-token-0123456789abcdef" http://127.0.0.1:18102/metrics | grep -E '^kv_requests_total' | head
kill $P1 $P2; wait
