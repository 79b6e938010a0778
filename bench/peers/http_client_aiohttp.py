"""aiohttp (Debian's python3-aiohttp) as an HTTP client under load: N concurrent tasks share
one ClientSession (limit N) and GET a URL for a fixed time. Prints the same JSON line as
bench/http_client_load.cpp.

    /usr/bin/python3 bench/peers/http_client_aiohttp.py --url http://127.0.0.1:8080/ [--concurrency 64] [--seconds 5]
"""
import argparse, asyncio, json, resource, sys, time

import aiohttp


def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


async def main(url, concurrency, seconds):
    ok = failed = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async with session.get(url) as r:  # connect once before timing
            await r.read()

        async def worker(until):
            nonlocal ok, failed
            while time.monotonic() < until:
                try:
                    async with session.get(url) as r:
                        await r.read()
                        if r.status == 200:
                            ok += 1
                        else:
                            failed += 1
                except Exception as e:  # noqa: BLE001 - a benchmark counts failures
                    failed += 1
                    print("request failed:", e, file=sys.stderr)

        cpu0, start = cpu(), time.monotonic()
        await asyncio.gather(*(worker(start + seconds) for _ in range(concurrency)))
        elapsed, used = time.monotonic() - start, cpu() - cpu0
    print(json.dumps({"client": "aiohttp", "requests": ok, "failed": failed, "seconds": round(elapsed, 3),
                      "req_s": round(ok / elapsed), "cpu_s": round(used, 3),
                      "cpu_us_per_req": round(used * 1e6 / ok, 2) if ok else 0}))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--url", default="http://127.0.0.1:8080/")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--seconds", type=float, default=5)
    a = p.parse_args()
    asyncio.run(main(a.url, a.concurrency, a.seconds))
