"""gunicorn (Debian's, sync workers) with the example contract's endpoints: the peer of
examples/cluster in bench/run_cluster.py. /compute is inline (a sync worker blocks on it).

    gunicorn -c bench/peers/cluster_gunicorn.py -w 2 -b 127.0.0.1:PORT cluster_gunicorn:app

On exit each worker appends "pid requests" to $PEER_COUNTS (the distribution figure).
"""
import json, math, os
from urllib.parse import parse_qs

served = 0


def app(environ, start_response):
    global served
    served += 1
    path = environ.get('PATH_INFO', '/')
    if path == '/':
        body, ctype = b'{"message":"Hello from tandem"}', 'application/json'
    elif path == '/ping':
        body, ctype = b'pong', 'text/plain'
    elif path == '/slow':
        import time
        time.sleep(0.2)
        body, ctype = b'slow', 'text/plain'
    elif path == '/compute':
        n = int(parse_qs(environ.get('QUERY_STRING', '')).get('n', ['20000000'])[0])
        body, ctype = json.dumps({'result': sum(math.sqrt(i) for i in range(n))}).encode(), 'application/json'
    else:
        start_response('404 Not Found', [('Content-Type', 'text/plain')])
        return [b'not found\n']
    start_response('200 OK', [('Content-Type', ctype), ('Content-Length', str(len(body)))])
    return [body]


# gunicorn config hooks (this file is also the -c config).
def worker_exit(server, worker):
    import cluster_gunicorn  # the app module (this file, loaded a second time as the config)
    path = os.environ.get('PEER_COUNTS')
    if path:
        with open(path, 'a') as f:
            f.write(f'{os.getpid()} {cluster_gunicorn.served}\n')
