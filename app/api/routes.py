"""The one route table: every URL the service answers, and the handler that answers it."""

from __future__ import annotations

from aiohttp import web

from app.api import accounts, feed, health, media, metrics, posts, uploads
from app.api import web as web_client

routes = [
    # Operations
    web.get("/healthz", health.healthz, allow_head=True),
    web.get("/readyz", health.readyz, allow_head=True),
    web.get("/metrics", metrics.serve_metrics),
    # Accounts and the follow graph
    web.post("/v1/users", accounts.sign_up),
    web.post("/v1/auth/token", accounts.token),
    web.delete("/v1/auth/tokens", accounts.revoke_tokens),
    web.get("/v1/me", accounts.me),
    web.delete("/v1/me", accounts.delete_me),
    web.get("/v1/users/{username}", accounts.get_user),
    web.put("/v1/following/{user_id}", accounts.follow),
    web.delete("/v1/following/{user_id}", accounts.unfollow),
    web.get("/v1/users/{username}/followers", accounts.followers),
    web.get("/v1/users/{username}/following", accounts.following),
    web.get("/v1/users/{username}/posts", posts.user_posts),
    # V0 uploads: the body through the service, thumbnailed in the request
    web.post("/v1/media", media.upload_media, expect_handler=media.refuse_early),
    web.delete("/v1/media/{media_id}", media.delete_media),
    # V1 uploads: presigned straight to S3, completed, processed by a media worker
    web.post("/v1/uploads", uploads.create_upload),
    web.post("/v1/uploads/{upload_id}/complete", uploads.complete_upload),
    web.get("/v1/media/{media_id}", uploads.get_media),
    # Posts, likes and the feed
    web.post("/v1/posts", posts.create_post),
    web.get("/v1/posts/{post_id}", posts.get_post),
    web.delete("/v1/posts/{post_id}", posts.delete_post),
    web.put("/v1/posts/{post_id}/like", posts.like),
    web.delete("/v1/posts/{post_id}/like", posts.unlike),
    web.get("/v1/feed", feed.get_feed),
    # The web client and the API's description
    web.get("/", web_client.index),
    web.get("/static/{name}", web_client.static_file),
    web.get("/openapi.json", web_client.openapi),
]
