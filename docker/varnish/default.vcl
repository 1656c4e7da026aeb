vcl 4.1;

# The edge cache in front of the S3 origin: it keeps the public images (media/*) for as long as
# their Cache-Control says (a year: keys are never reused), in a bounded store (varnishd -s),
# and serves hits without touching the origin. Deletes purge their objects (PURGE, from the
# purgers ACL). Nothing else reaches the origin through it: private sources and incoming
# uploads are refused here, and only GET and HEAD pass.
#
# site.vcl, found on varnishd's vcl_path, names the origin (`backend origin`) and who may
# purge (`acl purgers`): docker/varnish/compose-site.vcl for docker compose, one written by
# app/devstack/edge.py for `make stack` and the tests.

include "site.vcl";

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(405, "Method Not Allowed"));
        }
        return (purge);
    }
    if (req.method != "GET" && req.method != "HEAD") {
        return (synth(405, "Method Not Allowed"));
    }
    # A query string would make a new cache entry, and a miss, for the same object.
    set req.url = regsub(req.url, "\?.*$", "");
    # /<bucket>/media/<user>/<name>: what the bucket makes public. No "..", no escapes.
    if (req.url !~ "^/[a-z0-9][a-z0-9.-]*/media/[A-Za-z0-9_/-]+\.(jpg|png)$") {
        return (synth(404, "Not Found"));
    }
    unset req.http.Cookie;
    unset req.http.Authorization;
    return (hash);
}

sub vcl_hash {
    # The object is the path: every host name of the edge shares one copy, and a purge finds it.
    hash_data(req.url);
    return (lookup);
}

sub vcl_backend_fetch {
    # The origin gets its own host name (site.vcl's .host_header), not the edge's.
    unset bereq.http.Host;
}

sub vcl_backend_response {
    if (beresp.status == 403) {
        # S3 answers 403 for a key it does not have when anonymous callers may not list.
        set beresp.status = 404;
        set beresp.reason = "Not Found";
    }
    if (beresp.status == 404) {
        # A key that appears later must not be hidden for long.
        set beresp.ttl = 5s;
        set beresp.grace = 0s;
        return (deliver);
    }
    if (beresp.status != 200 && beresp.status != 206 && beresp.status != 304) {
        # The origin's errors are passed on, never kept.
        set beresp.uncacheable = true;
        set beresp.ttl = 1s;
        return (deliver);
    }
    unset beresp.http.Set-Cookie;
    return (deliver);
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
    unset resp.http.x-amz-request-id;
    unset resp.http.x-amz-id-2;
    unset resp.http.Via;
    unset resp.http.X-Varnish;
    unset resp.http.Server;
}

sub vcl_backend_error {
    # The origin did not answer: 503, never kept.
    set beresp.http.Content-Type = "application/xml";
    set beresp.http.Retry-After = "5";
    synthetic({"<?xml version="1.0" encoding="UTF-8"?><Error><Code>OriginUnavailable</Code>"} +
        {"<Message>"} + beresp.reason + {"</Message></Error>"});
    return (deliver);
}

sub vcl_synth {
    # Errors in S3's own shape, as the origin gives them.
    set resp.http.Content-Type = "application/xml";
    synthetic({"<?xml version="1.0" encoding="UTF-8"?><Error><Code>"} +
        resp.reason + {"</Code><Message>"} + resp.reason + {"</Message></Error>"});
    return (deliver);
}
