#!/usr/bin/env bash
# HTTP hello server: user-space instructions per request under callgrind, which no neighbour's
# load disturbs (wall-clock CPU per request swings by several percent on this shared machine).
# One client, N sequential keep-alive GETs of "/" on one connection after 2,000 warm-up ones;
# callgrind counts only while the N run. Prints Ir/request and the ten costliest functions.
#   bench/http_instructions.sh NAME=SERVER_BINARY... [-n N]
#   bench/http_instructions.sh tandem=build/release/examples/hello_server \
#       base=/tmp/base/build/release/examples/hello_server asio=build/release/bench/asio_http_server
# Needs valgrind (callgrind_control) and a C compiler. Every server takes --port 0 and prints
# "listening on http://127.0.0.1:PORT" (the example contract).
set -euo pipefail
n=20000
servers=()
while [ $# -gt 0 ]; do
    case $1 in
    -n) n=$2; shift 2 ;;
    *) servers+=("$1"); shift ;;
    esac
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/client.c" <<'EOF'
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
/* client PORT N: N sequential GETs on one connection, each response read whole. */
int main(int argc, char** argv) {
    if (argc != 3) return 2;
    const int port = atoi(argv[1]), n = atoi(argv[2]);
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr*)&sa, sizeof sa)) { perror("connect"); return 1; }
    static const char req[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    char buf[8192];
    size_t have = 0;
    for (int i = 0; i < n; ++i) {
        if (send(fd, req, sizeof req - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof req - 1)) return 1;
        for (;;) {
            const char* end = memmem(buf, have, "\r\n\r\n", 4);
            if (end) {
                size_t len = 0;
                const char* cl = memmem(buf, (size_t)(end - buf), "Content-Length: ", 16);
                if (cl) len = strtoul(cl + 16, 0, 10);
                const size_t total = (size_t)(end - buf) + 4 + len;
                if (have >= total) {
                    memmove(buf, buf + total, have - total);
                    have -= total;
                    break;
                }
            }
            if (have == sizeof buf) return 1;
            const ssize_t r = recv(fd, buf + have, sizeof buf - have, 0);
            if (r <= 0) { fprintf(stderr, "closed after %d responses\n", i); return 1; }
            have += (size_t)r;
        }
    }
    close(fd);
    return 0;
}
EOF
cc -O2 -o "$work/client" "$work/client.c"
for spec in "${servers[@]}"; do
    name=${spec%%=*} binary=${spec#*=}
    out="$work/$name"
    valgrind --tool=callgrind --callgrind-out-file="$out.cg" --instr-atstart=no "$binary" --port 0 > "$out.stdout" 2> "$out.stderr" &
    pid=$!
    for _ in $(seq 150); do grep -q listening "$out.stdout" 2>/dev/null && break; sleep 0.2; done
    port=$(grep -o '127\.0\.0\.1:[0-9]*' "$out.stdout" | cut -d: -f2)
    "$work/client" "$port" 2000
    callgrind_control -i on "$pid" > /dev/null
    "$work/client" "$port" "$n"
    callgrind_control -i off "$pid" > /dev/null
    kill -TERM "$pid"
    wait "$pid" || true
    total=$(callgrind_annotate --inclusive=no --threshold=100 --auto=no "$out.cg" 2>/dev/null |
        sed -n '/PROGRAM TOTALS/s/^ *\([0-9,]*\).*/\1/p' | tr -d ,)
    echo "$name: $((total / n)) instructions per request ($n requests)"
    callgrind_annotate --inclusive=no --threshold=100 --auto=no "$out.cg" 2>/dev/null |
        sed -n '/file:function/,$p' | awk -v n="$n" 'NR > 2 && NF > 1 {
            c = $1; gsub(",", "", c); $1 = ""; sub(/^ *\( *[0-9.]+%\) */, ""); sub(/ \[\/.*/, "")
            printf "  %7.1f %s\n", c / n, substr($0, 1, 110)
        }' | head -10 || true # head closes the pipe early
done
