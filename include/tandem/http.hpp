// tandem — HTTP/1.1: the pure parser, the router, the server (and serve()), the client, a
// JSON writer and a Prometheus metrics handler.
#pragma once

#include "tandem/http/client.hpp"
#include "tandem/http/header_list.hpp"
#include "tandem/http/json.hpp"
#include "tandem/http/message.hpp"
#include "tandem/http/metrics.hpp"
#include "tandem/http/parser.hpp"
#include "tandem/http/router.hpp"
#include "tandem/http/serve.hpp"
#include "tandem/http/server.hpp"
