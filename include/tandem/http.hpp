// tandem — HTTP/1.1: the pure parser, the server and the client.
#pragma once

#include "tandem/http/client.hpp"
#include "tandem/http/message.hpp"
#include "tandem/http/parser.hpp"
#include "tandem/http/router.hpp"
#include "tandem/http/server.hpp"
