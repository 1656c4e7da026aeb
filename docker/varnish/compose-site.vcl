vcl 4.1;

# The origin and the purgers when docker/compose.yaml runs the edge (mounted as site.vcl).

backend origin {
    .host = "s3";
    .port = "5000";
    .host_header = "s3:5000";
    .connect_timeout = 2s;
    .first_byte_timeout = 10s;
    .between_bytes_timeout = 5s;
}

# The service containers purge deleted objects; compose's network is private.
acl purgers {
    "127.0.0.1";
    "10.0.0.0"/8;
    "172.16.0.0"/12;
    "192.168.0.0"/16;
}
