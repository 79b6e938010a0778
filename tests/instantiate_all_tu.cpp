// A second translation unit of test_task that instantiates, explicitly, every class template
// tandem keeps as a template only so that including a header compiles none of its bodies
// (`basic_server<>`, `supervisor<>`, ...; bench/README.md, "Include cost"). Those bodies are
// no longer checked when a header is included: a test that never calls a member would leave a
// mistake in it unseen until a user called it. An explicit instantiation compiles every
// non-template member, with both compilers, in every build of the tests.
#include "tandem/tandem.hpp"

template class tandem::basic_thread_pool<void>;
template class tandem::basic_process_pool<void>;
template class tandem::http::basic_server<void>;
template class tandem::http::basic_router<void>;
template class tandem::http::basic_client<void>;
template class tandem::http::basic_connection_pool<void>;
template class tandem::http::basic_connection_lease<void>;
template class tandem::http::basic_json<void>;
template class tandem::detail::basic_timer_heap<void>;
template class tandem::detail::basic_blocking_watchdog<void>;
template class tandem::detail::basic_resolver_threads<void>;
template class tandem::detail::basic_resolve_awaiter<void>;
template class tandem::detail::basic_report_links<void>;
template class tandem::detail::basic_zygote<void>;
template class tandem::detail::basic_worker_set<void>;
template class tandem::cluster::detail::supervisor<void>;

// The function templates kept as templates for the same reason.
template tandem::task<int> tandem::detail::accept_fd<void>(tandem::detail::socket_base&);
template tandem::task<std::vector<tandem::address>> tandem::resolve<void>(std::string, std::uint16_t);
template std::string tandem::detail::demangle<void>(const char*);
template void tandem::start_zygote<void>();
template std::string tandem::detail::describe_exit<void>(pid_t, tandem::process::exit_status);
template std::string tandem::http::metrics_text<void>(const tandem::http::server_stats&, const tandem::loop_stats&,
                                                      std::span<const tandem::http::pool_figures>);
template tandem::http::handler tandem::http::metrics_handler<void>(std::vector<tandem::http::pool_probe>);
template std::string tandem::http::detail::label_value<void>(std::string_view);
template tandem::task<tandem::http::client_response> tandem::http::fetch<void>(std::string, tandem::http::fetch_options);
template tandem::task<tandem::http::client_response> tandem::http::fetch<void>(std::string);
template tandem::task<void> tandem::http::serve<void>(tandem::address, tandem::http::router, tandem::http::server_options,
                                                      tandem::http::serve_options);
template tandem::task<void> tandem::cluster::detail::heartbeat<void>(tandem::cluster::worker&, tandem::cluster::detail::seat&,
                                                                     std::chrono::milliseconds);
template tandem::task<void> tandem::cluster::detail::stop_on_signal<void>(tandem::signal_set&, tandem::cluster::worker&);
template tandem::task<void> tandem::cluster::detail::call_serve<void>(const tandem::cluster::serve_function&,
                                                                      tandem::cluster::worker&);
template tandem::task<int> tandem::cluster::detail::run_worker<void>(tandem::cluster::worker&,
                                                                     const tandem::cluster::detail::worker_setup&);
template void tandem::cluster::detail::worker_main<void>(const tandem::cluster::detail::worker_setup&) noexcept;
