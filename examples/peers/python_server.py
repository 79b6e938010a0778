"""The showdown's Python peer: the same endpoints as tandem's examples, standard library only.

    python3 examples/peers/python_server.py --mode inline|processes [--port 0] [--work-ms 50]

--mode inline     /compute runs the job inside the coroutine, never awaiting (blocks the loop)
--mode processes  /compute awaits loop.run_in_executor(ProcessPoolExecutor, job)
The job is sum(sqrt(i)) for a count calibrated at start to --work-ms of thread CPU time.
Prints "listening on http://127.0.0.1:PORT"; exits 0 on SIGINT/SIGTERM.
"""
import argparse
import asyncio
import concurrent.futures
import ctypes
import math
import os
import signal
import sys
import time


def sum_sqrt(n):
    total = 0.0
    sqrt = math.sqrt
    for i in range(n):
        total += sqrt(i)
    return total


def calibrate(ms):
    # thread CPU time: a busy machine stretches wall time, not this
    n = 50_000
    while True:
        start = time.thread_time()
        sum_sqrt(n)
        took = (time.thread_time() - start) * 1000
        if took >= 20:
            return max(1, round(n * ms / took))
        n *= 2


def die_with_parent(server_pid):
    # a pool worker must not outlive the server (PR_SET_PDEATHSIG = 1, SIGKILL); a server killed
    # between this worker's fork and this call sent no signal, so check it is still the parent
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != server_pid:
        os._exit(1)


class Lag:
    """Loop delay the way Node's monitorEventLoopDelay sees it: a 10 ms timer's lateness."""

    def __init__(self):
        self.samples = []

    async def run(self):
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.010
            await asyncio.sleep(0.010)
            self.samples.append(max(0.0, loop.time() - due) * 1000)
            if len(self.samples) > 100_000:
                del self.samples[:50_000]

    def p99(self):
        if not self.samples:
            return 0.0
        s = sorted(self.samples)
        return s[max(0, math.ceil(0.99 * len(s)) - 1)]


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["inline", "processes"], default="inline")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--work-ms", type=float, default=50)
    args = ap.parse_args()
    n = calibrate(args.work_ms)
    loop = asyncio.get_running_loop()
    pool = None
    if args.mode == "processes":
        pool = concurrent.futures.ProcessPoolExecutor(os.cpu_count() or 1, initializer=die_with_parent,
                                                    initargs=(os.getpid(),))

    async def compute():
        if pool is None:
            return sum_sqrt(n)  # never awaits: the loop is stuck here
        return await loop.run_in_executor(pool, sum_sqrt, n)

    lag = Lag()
    lag_task = asyncio.create_task(lag.run())

    async def respond(writer, status, ctype, body):
        data = body.encode()
        reason = {200: "OK", 404: "Not Found", 400: "Bad Request"}.get(status, "OK")
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                     f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        await writer.drain()

    async def handle(reader, writer):
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    break
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                if len(parts) != 3:
                    await respond(writer, 400, "text/plain", "bad request\n")
                    break
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip() or 0)
                if length:
                    await reader.readexactly(length)
                path = parts[1].split("?")[0]
                if path == "/":
                    await respond(writer, 200, "application/json", '{"message":"Hello from python"}')
                elif path == "/ping":
                    await respond(writer, 200, "text/plain", "pong")
                elif path == "/slow":
                    await asyncio.sleep(0.2)
                    await respond(writer, 200, "text/plain", "slow")
                elif path == "/compute":
                    await respond(writer, 200, "application/json", '{"result": %.6f}' % await compute())
                elif path == "/reset-stats":
                    lag.samples.clear()
                    await respond(writer, 200, "text/plain", "ok")
                elif path == "/stats":
                    await respond(writer, 200, "application/json",
                                  '{"loop_delay_p99_ms": %.3f, "longest_step_ms": %.3f}'
                                  % (lag.p99(), max(lag.samples, default=0.0)))
                else:
                    await respond(writer, 404, "text/plain", "not found\n")
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", args.port, backlog=4096)
    print(f"listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    lag_task.cancel()
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
