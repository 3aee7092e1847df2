"""The smallest Kubernetes API server the discovery tests need: list and watch as the real API
server does them, which kmock's KubernetesEmulator does not (see scripts/NOTES-kmock.md).

What it speaks (the subset of https://kubernetes.io/docs/reference/using-api/api-concepts/
that kube-rs' watcher uses):
- every object gets metadata.resourceVersion (a global, monotonic counter), uid and
  creationTimestamp; a list carries the store's resourceVersion;
- GET  /api/v1/[namespaces/NS/]services, /apis/discovery.k8s.io/v1/[namespaces/NS/]endpointslices
  (any /api/V/... or /apis/G/V/... path works): list, with labelSelector (equality terms),
  limit and continue;
- ?watch=true&resourceVersion=N: the events after N from the retained history, then live ones,
  as JSON lines of {type, object}; N empty or "0" starts with ADDED for every current object;
  N older than the retained history gets an ERROR event with a 410 Expired Status (then the
  client relists); allowWatchBookmarks=true sends BOOKMARK events; timeoutSeconds ends the stream;
- POST (create, 409 when it exists), PUT (replace), PATCH (JSON merge), DELETE, GET of a name.

Test controls (not Kubernetes API):
- POST /_admin/bulk   {"items": [...]}: create many objects at once (benchmarks);
- POST /_admin/expire-watches: forget the event history and send every open watch an ERROR
  event with a 410 Expired Status (as when a watcher falls out of the watch cache), so the
  clients relist;
- POST /_admin/drop-watches: end every open watch stream (a broken connection); the clients
  resume from their last resourceVersion.

Run: python k8s-listwatch-server.py [--port P] [--state FILE]. It prints "listening on PORT"
once it serves. With --state, objects and the resourceVersion counter are saved after every
change and loaded at start, so a restarted server has the same objects (an API server outage).
"""
import argparse
import asyncio
import bisect
import collections
import json
import os
import sys
import time
import uuid

from aiohttp import web

# The kinds of the paths this server knows; others answer as an empty, generic kind.
KINDS = {'services': 'Service', 'endpointslices': 'EndpointSlice', 'pods': 'Pod',
         'namespaces': 'Namespace', 'configmaps': 'ConfigMap'}
HISTORY = 1_000_000


class Store:
    def __init__(self, state_file):
        self.state_file = state_file
        self.rv = 1
        # (api prefix, plural) -> {(namespace, name): object}
        self.objects = collections.defaultdict(dict)
        # (rv, api prefix, plural, type, object), oldest first
        self.history = collections.deque(maxlen=HISTORY)
        self.oldest = 1  # watches from a resourceVersion below this get 410
        self.watchers = set()
        if state_file and os.path.exists(state_file):
            with open(state_file) as f:
                saved = json.load(f)
            self.rv = saved['rv']
            self.oldest = self.rv
            for entry in saved['objects']:
                key = (entry['prefix'], entry['plural'])
                o = entry['object']
                self.objects[key][(o['metadata'].get('namespace', ''), o['metadata']['name'])] = o

    def save(self):
        if not self.state_file:
            return
        objects = [{'prefix': p, 'plural': pl, 'object': o}
                   for (p, pl), objs in self.objects.items() for o in objs.values()]
        tmp = self.state_file + '.tmp'
        with open(tmp, 'w') as f:
            json.dump({'rv': self.rv, 'objects': objects}, f)
        os.replace(tmp, self.state_file)

    def next_rv(self):
        self.rv += 1
        return str(self.rv)

    def record(self, prefix, plural, typ, obj):
        self.history.append((self.rv, prefix, plural, typ, obj))
        if len(self.history) == self.history.maxlen:
            self.oldest = self.history[0][0]
        for w in list(self.watchers):
            w.offer(self.rv, prefix, plural, typ, obj)

    def put(self, prefix, plural, obj, create):
        meta = obj.setdefault('metadata', {})
        key = (meta.get('namespace', ''), meta['name'])
        objs = self.objects[(prefix, plural)]
        old = objs.get(key)
        if create and old is not None:
            return None
        if old is not None:
            meta['uid'] = old['metadata']['uid']
            meta['creationTimestamp'] = old['metadata']['creationTimestamp']
        else:
            meta['uid'] = str(uuid.uuid4())
            meta['creationTimestamp'] = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
        meta['resourceVersion'] = self.next_rv()
        objs[key] = obj
        self.record(prefix, plural, 'MODIFIED' if old is not None else 'ADDED', obj)
        return obj

    def delete(self, prefix, plural, namespace, name):
        obj = self.objects[(prefix, plural)].pop((namespace, name), None)
        if obj is None:
            return None
        obj = json.loads(json.dumps(obj))
        obj['metadata']['resourceVersion'] = self.next_rv()
        self.record(prefix, plural, 'DELETED', obj)
        return obj


class Watch:
    def __init__(self, prefix, plural, namespace, selector):
        self.prefix, self.plural, self.namespace, self.selector = prefix, plural, namespace, selector
        self.queue = asyncio.Queue()

    def wants(self, prefix, plural, obj):
        return (prefix, plural) == (self.prefix, self.plural) and selected(obj, self.namespace, self.selector)

    def offer(self, rv, prefix, plural, typ, obj):
        if self.wants(prefix, plural, obj):
            self.queue.put_nowait({'type': typ, 'object': obj})


def parse_selector(s):
    terms = []
    for part in filter(None, (p.strip() for p in (s or '').split(','))):
        if '!=' in part:
            k, v = part.split('!=', 1)
            terms.append(('ne', k.strip(), v.strip()))
        elif '=' in part:
            k, v = part.replace('==', '=').split('=', 1)
            terms.append(('eq', k.strip(), v.strip()))
        elif part.startswith('!'):
            terms.append(('absent', part[1:].strip(), None))
        else:
            terms.append(('exists', part, None))
    return terms


def selected(obj, namespace, selector):
    meta = obj.get('metadata', {})
    if namespace and meta.get('namespace') != namespace:
        return False
    labels = meta.get('labels') or {}
    for op, k, v in selector:
        if op == 'eq' and labels.get(k) != v:
            return False
        if op == 'ne' and labels.get(k) == v:
            return False
        if op == 'exists' and k not in labels:
            return False
        if op == 'absent' and k in labels:
            return False
    return True


def parse_path(path):
    """-> (prefix, namespace, plural, name) or None."""
    parts = [p for p in path.split('/') if p]
    if parts[:1] == ['api'] and len(parts) >= 2:
        prefix, rest = '/'.join(parts[:2]), parts[2:]
    elif parts[:1] == ['apis'] and len(parts) >= 3:
        prefix, rest = '/'.join(parts[:3]), parts[3:]
    else:
        return None
    namespace = ''
    if len(rest) >= 3 and rest[0] == 'namespaces':
        namespace, rest = rest[1], rest[2:]
    if len(rest) == 1:
        return prefix, namespace, rest[0], None
    if len(rest) == 2:
        return prefix, namespace, rest[0], rest[1]
    return None


def status(code, reason, message):
    return web.json_response({'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
                              'message': message, 'reason': reason, 'code': code}, status=code)


def api_version(prefix):
    return prefix.split('/', 1)[1]


async def handle(request):
    store = request.app['store']
    parsed = parse_path(request.path)
    if parsed is None:
        return status(404, 'NotFound', f'the server could not find the requested resource {request.path}')
    prefix, namespace, plural, name = parsed
    kind = KINDS.get(plural, plural.capitalize())
    q = request.query
    m = request.method
    if m == 'GET' and name is None and q.get('watch') in ('true', '1'):
        return await watch(request, store, prefix, plural, namespace, q)
    if m == 'GET' and name is None:
        return list_(store, prefix, plural, kind, namespace, q)
    objs = store.objects[(prefix, plural)]
    if m == 'GET':
        obj = objs.get((namespace, name))
        return web.json_response(obj) if obj else status(404, 'NotFound', f'{plural} "{name}" not found')
    if m == 'DELETE':
        obj = store.delete(prefix, plural, namespace, name)
        if obj is None:
            return status(404, 'NotFound', f'{plural} "{name}" not found')
        store.save()
        return web.json_response(obj)
    body = await request.json()
    body.setdefault('apiVersion', api_version(prefix))
    body.setdefault('kind', kind)
    meta = body.setdefault('metadata', {})
    if namespace:
        meta['namespace'] = namespace
    if m == 'POST':
        if 'name' not in meta:
            return status(422, 'Invalid', 'metadata.name: Required value')
        obj = store.put(prefix, plural, body, create=True)
        if obj is None:
            return status(409, 'AlreadyExists', f'{plural} "{meta["name"]}" already exists')
        store.save()
        return web.json_response(obj, status=201)
    if m == 'PUT':
        meta['name'] = name
        obj = store.put(prefix, plural, body, create=False)
        store.save()
        return web.json_response(obj)
    if m == 'PATCH':
        old = objs.get((namespace, name))
        if old is None:
            return status(404, 'NotFound', f'{plural} "{name}" not found')
        obj = store.put(prefix, plural, merge(json.loads(json.dumps(old)), body), create=False)
        store.save()
        return web.json_response(obj)
    return status(405, 'MethodNotAllowed', f'{m} is not supported')


def merge(old, patch):
    for k, v in patch.items():
        if v is None:
            old.pop(k, None)
        elif isinstance(v, dict) and isinstance(old.get(k), dict):
            merge(old[k], v)
        else:
            old[k] = v
    return old


def list_(store, prefix, plural, kind, namespace, q):
    selector = parse_selector(q.get('labelSelector'))
    objs = store.objects[(prefix, plural)]
    keys = sorted(objs)
    rv = str(store.rv)
    cont = q.get('continue')
    if cont:
        rv, ns, nm = json.loads(cont)
        keys = keys[bisect.bisect_right(keys, (ns, nm)):]
    limit = int(q.get('limit') or 0)
    items = []
    for k in keys:
        o = objs[k]
        if selected(o, namespace, selector):
            items.append((k, o))
            if limit and len(items) > limit:
                break
    meta = {'resourceVersion': rv}
    if limit and len(items) > limit:
        items = items[:limit]
        meta['continue'] = json.dumps([rv, *items[-1][0]])
    return web.json_response({'kind': kind + 'List', 'apiVersion': api_version(prefix), 'metadata': meta,
                              'items': [o for _, o in items]})


async def watch(request, store, prefix, plural, namespace, q):
    selector = parse_selector(q.get('labelSelector'))
    rv_param = q.get('resourceVersion', '')
    bookmarks = q.get('allowWatchBookmarks') == 'true'
    timeout = float(q.get('timeoutSeconds') or 1800)
    w = Watch(prefix, plural, namespace, selector)
    resp = web.StreamResponse(headers={'Content-Type': 'application/json'})
    await resp.prepare(request)

    async def send(event):
        await resp.write((json.dumps(event) + '\n').encode())

    if rv_param in ('', '0'):
        backlog = [{'type': 'ADDED', 'object': o} for o in store.objects[(prefix, plural)].values()
                   if selected(o, namespace, selector)]
    else:
        since = int(rv_param)
        if since < store.oldest - 1 or since > store.rv:
            await send({'type': 'ERROR', 'object': {
                'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
                'message': f'too old resource version: {since} ({store.oldest})',
                'reason': 'Expired', 'code': 410}})
            return resp
        backlog = [{'type': t, 'object': o} for rv, p, pl, t, o in store.history
                   if rv > since and w.wants(p, pl, o)]
    store.watchers.add(w)
    request.app['watches'].add(resp)
    try:
        for event in backlog:
            await send(event)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                event = await asyncio.wait_for(w.queue.get(), timeout=min(left, 1.0))
                if event is None:
                    break
                await send(event)
                if event['type'] == 'ERROR':
                    break
            except asyncio.TimeoutError:
                if bookmarks:
                    await send({'type': 'BOOKMARK', 'object': {
                        'kind': KINDS.get(plural, plural), 'apiVersion': api_version(prefix),
                        'metadata': {'resourceVersion': str(store.rv)}}})
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        store.watchers.discard(w)
        request.app['watches'].discard(resp)
    return resp


async def admin(request):
    store = request.app['store']
    what = request.match_info['what']
    if what == 'bulk':
        body = await request.json()
        for item in body['items']:
            prefix = 'api/v1' if item.get('apiVersion', 'v1') == 'v1' else 'apis/' + item['apiVersion']
            plural = {'Service': 'services', 'EndpointSlice': 'endpointslices'}[item['kind']]
            store.put(prefix, plural, item, create=False)
        store.save()
        return web.json_response({'created': len(body['items']), 'resourceVersion': str(store.rv)})
    if what == 'expire-watches':
        # What the API server does when a watcher falls out of its watch cache window: the
        # history is gone, the open watches get a 410, and the clients must relist.
        store.history.clear()
        store.oldest = store.rv + 1
        n = len(store.watchers)
        for w in list(store.watchers):
            w.queue.put_nowait({'type': 'ERROR', 'object': {
                'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
                'message': 'too old resource version', 'reason': 'Expired', 'code': 410}})
        return web.json_response({'expired': n})
    if what == 'drop-watches':
        n = len(store.watchers)
        for w in list(store.watchers):
            w.queue.put_nowait(None)
        return web.json_response({'dropped': n})
    return status(404, 'NotFound', what)


async def version(_request):
    return web.json_response({'major': '1', 'minor': '34', 'gitVersion': 'v1.34.0-listwatch-test'})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--port', type=int, default=0)
    ap.add_argument('--state')
    args = ap.parse_args()
    app = web.Application(client_max_size=1 << 30)
    app['store'] = Store(args.state)
    app['watches'] = set()
    app.router.add_post('/_admin/{what}', admin)
    app.router.add_get('/version', version)
    app.router.add_route('*', '/{tail:.*}', handle)

    async def run():
        runner = web.AppRunner(app, handle_signals=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, '127.0.0.1', args.port, reuse_address=True)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        print(f'listening on {port}', flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == '__main__':
    sys.exit(main())
