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

// The member and function templates whose bodies (and spelled `dependent_t<..., Deferred>`
// return types) are compiled only where called since the clang round (detail/dependent.hpp).
template tandem::task<tandem::tcp_stream> tandem::tcp_stream::connect<void>(tandem::address, std::chrono::nanoseconds);
template tandem::task<tandem::tcp_stream> tandem::tcp_listener::accept<void>();
template tandem::task<tandem::unix_stream> tandem::unix_stream::connect<void>(std::string_view);
template tandem::task<tandem::unix_stream> tandem::unix_listener::accept<void>();
template tandem::task<tandem::datagram> tandem::udp_socket::receive_from<void>(std::span<char>);
template std::optional<tandem::process::exit_status> tandem::process::pidfd::try_reap<void>() const;
template std::pair<std::string, std::string> tandem::detail::describe_current_exception<void>();
template void tandem::detail::worker_main<void>(tandem::detail::worker_initializer, std::chrono::microseconds,
                                                const tandem::process::start_board&, std::size_t) noexcept;
template std::vector<tandem::cluster::worker_stats> tandem::cluster::board::snapshot<void>() const;
template std::vector<tandem::cluster::worker_stats> tandem::cluster::worker::cluster_stats<void>() const;
template std::optional<std::uint64_t> tandem::http::detail::bytes_acked<void>(int) noexcept;
template tandem::http::response tandem::http::response::stream<void>(tandem::http::field_text,
                                                                     tandem::http::response::stream_function, int);
template std::optional<std::string> tandem::http::percent_decode<void>(std::string_view, bool);
template std::optional<std::string> tandem::http::query_value<void>(std::string_view, std::string_view);
template std::string_view tandem::http::request::param<void>(std::string_view) const noexcept;
template std::optional<std::string> tandem::http::request::query_param<void>(std::string_view) const;
template void tandem::http::append_json_string<void>(std::string&, std::string_view);
template void tandem::http::append_response_head<void>(std::string&, int, int,
                                                       std::span<const tandem::http::header_list::value_type>,
                                                       tandem::http::head_framing);
template class tandem::http::detail::exposition<void>;
template tandem::task<std::size_t> tandem::http::pooled_connection::read_more<void>();
template void tandem::event_loop::watch_blocking<void>(std::chrono::nanoseconds, tandem::blocking_handler);
template tandem::basic_thread_pool<void>& tandem::default_thread_pool<void>();
