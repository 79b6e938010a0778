// libFuzzer target for the HTTP parser: requests, responses and chunked bodies.
//
//   cmake -S . -B build/fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DTANDEM_BUILD_FUZZ=ON
//   cmake --build build/fuzz --target fuzz_http_parser
//   build/fuzz/tests/fuzz/fuzz_http_parser -max_total_time=60 tests/fuzz/corpus
//
// Beyond "no crash, no sanitizer report", it checks invariants: a complete head lies inside
// the input, every view points into the input, an error always carries a 4xx/5xx status,
// a chunked body decodes to the same bytes however the input is split, and the incremental
// head scanner gives the same answer however the head arrives (an error, once reported for
// a prefix, stays the answer for every longer input), and the one-pass parser fed in two
// steps, the bytes moved between them, parses what parse_request parses.
#include "tandem/http/parser.hpp"

#include <array>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

void require(bool ok) {
    if (!ok) std::abort();
}

bool inside(std::string_view part, std::string_view whole) {
    return part.empty() || (part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size());
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    namespace http = tandem::http;

    std::array<http::header, 100> storage;
    http::request_head req;
    const http::parse_result r = http::parse_request(in, req, storage);
    if (r.state == http::parse_state::error) require(r.status >= 400 && r.status < 600 && !r.reason.empty());
    if (r.state == http::parse_state::complete) {
        require(r.head_size <= in.size());
        require(inside(req.method, in) && inside(req.target, in) && inside(req.query, in));
        require(inside(req.path, in) || req.path == "/" || req.path == "*"); // "http://host" has the path "/" ("*" for OPTIONS)
        for (const http::header& h : req.headers) require(inside(h.name, in) && inside(h.value, in) && !h.name.empty());
        require(req.version == 10 || req.version == 11);
        require(!(req.framing == http::body_framing::content_length && req.content_length == 0));
        // The same head parsed again from a copy gives the same answer (no hidden state).
        const std::string copy(in.substr(0, r.head_size));
        http::request_head again;
        std::array<http::header, 100> storage2;
        const http::parse_result r2 = http::parse_request(copy, again, storage2);
        require(r2.state == http::parse_state::complete && r2.head_size == r.head_size);
        if (req.framing == http::body_framing::chunked) {
            http::chunked_decoder d;
            std::string body;
            (void)d.decode(in.substr(r.head_size), [&](std::string_view s) { body.append(s); });
        }
    }

    // The head scanner fed in two steps agrees with one step over the whole input.
    if (size > 0) {
        const std::size_t split = data[size - 1] % size;
        http::head_scanner once, twice;
        const http::parse_result whole = once.scan(in, {});
        const http::parse_result first = twice.scan(in.substr(0, split), {});
        const http::parse_result second = first.state == http::parse_state::incomplete ? twice.scan(in, {}) : first;
        require(whole.state == second.state && whole.status == second.status && whole.head_size == second.head_size);
        if (r.state == http::parse_state::error && whole.state == http::parse_state::error) require(r.status == whole.status);

        // The one-pass parser fed the same two steps, the bytes moved to a new buffer in
        // between (a connection buffer compacted or grown), agrees with parse_request.
        http::head_scanner parser;
        std::array<http::header, 100> parts_storage;
        http::request_head parts;
        const std::string before(in.substr(0, split));
        http::parse_result p = parser.parse(before, parts, parts_storage, {});
        const std::string after(in);
        const bool twice_fed = p.state == http::parse_state::incomplete;
        if (twice_fed) p = parser.parse(after, parts, parts_storage, {});
        const std::string& last = twice_fed ? after : before; // the views point into the last bytes fed
        require(p.state == r.state && p.status == r.status && p.head_size == r.head_size);
        if (p.state == http::parse_state::complete) {
            require(parts.method == req.method && parts.target == req.target && parts.path == req.path &&
                    parts.query == req.query && parts.framing == req.framing && parts.keep_alive == req.keep_alive &&
                    parts.headers.size() == req.headers.size());
            for (std::size_t i = 0; i < parts.headers.size(); ++i)
                require(inside(parts.headers[i].name, last) && inside(parts.headers[i].value, last) &&
                        parts.headers[i].name == req.headers[i].name && parts.headers[i].value == req.headers[i].value);
        }
    }

    http::response_head resp;
    const http::parse_result rr = http::parse_response(in, resp, storage, size % 2 == 0);
    if (rr.state == http::parse_state::complete) require(rr.head_size <= in.size() && resp.status >= 100);

    // Chunked decoding: whole versus split at a data-chosen point must agree.
    if (size > 0) {
        const std::size_t split = data[0] % size;
        const std::string_view body = in.substr(1);
        std::string whole_out, split_out;
        http::chunked_decoder whole(1 << 20), parts(1 << 20);
        const auto a = whole.decode(body, [&](std::string_view s) { whole_out.append(s); });
        auto b = parts.decode(body.substr(0, std::min(split, body.size())), [&](std::string_view s) { split_out.append(s); });
        std::size_t used = b.consumed;
        if (b.state == http::parse_state::incomplete) {
            b = parts.decode(body.substr(used), [&](std::string_view s) { split_out.append(s); });
            used += b.consumed;
        }
        require(a.state == b.state);
        if (a.state == http::parse_state::complete) {
            require(whole_out == split_out);
            require(a.consumed == used);
        }
    }
    return 0;
}
