// hello_server — the minimal tandem HTTP server, following the example contract.
//
//   build/demo/examples/hello_server --port 8080
//   curl http://127.0.0.1:8080/            → {"message":"Hello from tandem"}
//   curl http://127.0.0.1:8080/ping        → pong
//   curl http://127.0.0.1:8080/slow        → slow   (after a 200 ms timer; others keep being served)
//   curl 'http://127.0.0.1:8080/compute?n=1000000'  → {"result": ...}  (on the default thread pool)
//   wrk -t1 -c64 -d10s http://127.0.0.1:8080/
#include "example_server.hpp"

int main(int argc, char** argv) {
    const example::options o = example::parse(argc, argv);
    tandem::http::router routes;
    example::add_common_routes(routes);
    routes.get("/compute", [](tandem::http::request& req) -> tandem::task<tandem::http::response> {
        const auto n = example::compute_n(req);
        if (!n) co_return tandem::http::response(400, "n must be a number between 0 and 2000000000\n");
        const double r = co_await tandem::offload(example::sum_sqrt, *n);
        co_return tandem::http::response::json(example::result_json(r));
    });
    tandem::event_loop loop;
    return example::serve(loop, o.port, std::move(routes));
}
