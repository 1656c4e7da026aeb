// Monogram's web client: a plain client of the JSON API, no build step, no dependencies.
"use strict";

const $ = (id) => document.getElementById(id);
const session = {
  get token() { return localStorage.getItem("monogram.token"); },
  get username() { return localStorage.getItem("monogram.username"); },
  save(token, username) {
    localStorage.setItem("monogram.token", token);
    localStorage.setItem("monogram.username", username);
  },
  clear() { localStorage.removeItem("monogram.token"); localStorage.removeItem("monogram.username"); },
};

class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

async function api(method, path, body) {
  const headers = {};
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, "network", "Cannot reach the service.");
  }
  return parseResponse(response.status, response.headers.get("Retry-After"), await response.text());
}

function parseResponse(status, retryAfter, text) {
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (status >= 200 && status < 300) return data;
  const error = (data && data.error) || { code: "http_error", message: `The service answered ${status}.` };
  throw new ApiError(status, error.code, error.message, retryAfter);
}

// What a person should read for each error the API can give.
function explain(error) {
  switch (error.code) {
    case "payload_too_large": return "That photo is larger than 10 MB. Choose a smaller one.";
    case "unsupported_media_type": return "That file is not a JPEG, PNG or HEIC photo.";
    case "rate_limited": return `Too many requests. Try again in ${error.retryAfter || "a few"} seconds.`;
    case "overloaded":
    case "database_busy":
    case "service_unavailable": return "The service is busy right now. Try again in a moment.";
    case "unauthorized":
    case "invalid_token":
    case "token_expired": return "Your session has ended. Please log in again.";
    case "network": return error.message;
    default: return error.message || "Something went wrong.";
  }
}

function say(message, ok = false) {
  const status = $("status");
  status.textContent = message;
  status.classList.toggle("ok", ok);
  status.hidden = !message;
}

function fail(error) {
  say(explain(error));
  if (error.status === 401 && session.token) showSignedOut();
}

// --- signing in ---------------------------------------------------------------------

$("auth-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const action = event.submitter ? event.submitter.value : "login";
  const username = form.username.value.trim().toLowerCase();
  const password = form.password.value;
  try {
    if (action === "signup") await api("POST", "/v1/users", { username, password });
    const token = await api("POST", "/v1/auth/token", { username, password });
    session.save(token.access_token, username);
    form.reset();
    say("");
    showSignedIn();
  } catch (error) { fail(error); }
});

$("logout").addEventListener("click", () => { session.clear(); showSignedOut(); });

function showSignedIn() {
  $("auth").hidden = true;
  $("app").hidden = false;
  $("whoami").textContent = `@${session.username}`;
  $("whoami").hidden = false;
  $("logout").hidden = false;
  feed.restart();
}

function showSignedOut() {
  $("auth").hidden = false;
  $("app").hidden = true;
  $("whoami").hidden = true;
  $("logout").hidden = true;
}

// --- uploading and posting -----------------------------------------------------------

let uploaded = null;
const MAX_UPLOAD_BYTES = 10 * 1024 * 1024;

$("upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = event.currentTarget.file.files[0];
  if (!file) return;
  // The service refuses bodies over its limit (10 MiB by default) and may close the connection
  // mid-upload to avoid reading them: say so before sending.
  if (file.size > MAX_UPLOAD_BYTES) { fail(new ApiError(413, "payload_too_large", "")); return; }
  const progress = $("upload-progress");
  progress.hidden = false;
  progress.value = 0;
  say("");
  const body = new FormData();
  body.append("file", file);
  const request = new XMLHttpRequest();  // fetch cannot report upload progress
  request.open("POST", "/v1/media");
  request.setRequestHeader("Authorization", `Bearer ${session.token}`);
  request.upload.onprogress = (e) => { if (e.lengthComputable) progress.value = (100 * e.loaded) / e.total; };
  request.onerror = () => { progress.hidden = true; fail(new ApiError(0, "network", "Cannot reach the service.")); };
  request.onload = () => {
    progress.hidden = true;
    try {
      uploaded = parseResponse(request.status, request.getResponseHeader("Retry-After"), request.responseText);
    } catch (error) { fail(error); return; }
    const preview = $("preview");
    preview.src = uploaded.thumbnail_url;
    preview.width = Math.min(150, uploaded.width);
    preview.height = Math.round((preview.width * uploaded.height) / uploaded.width);
    $("post-form").hidden = false;
    $("post-form").caption.focus();
    say("Uploaded. Add a caption and post it.", true);
  };
  request.send(body);
});

$("post-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  try {
    await api("POST", "/v1/posts", { media_id: uploaded.media_id, caption: form.caption.value });
    form.reset();
    form.hidden = true;
    $("upload-form").reset();
    say("Posted. Your followers will see it in their feeds.", true);
  } catch (error) { fail(error); }
});

// --- following -----------------------------------------------------------------------

let found = null;

$("find-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const username = event.currentTarget.username.value.trim().toLowerCase();
  try {
    found = await api("GET", `/v1/users/${encodeURIComponent(username)}`);
    $("profile-name").textContent = `${found.display_name} (@${found.username})`;
    $("profile-counts").textContent =
      `${found.posts_count} posts · ${found.followers_count} followers · ${found.following_count} following`;
    setFollowing(false);
    $("profile").hidden = false;
    say("");
  } catch (error) {
    $("profile").hidden = true;
    fail(error.code === "not_found" ? new ApiError(404, "not_found", `Nobody is called ${username}.`) : error);
  }
});

function setFollowing(following) {
  const button = $("follow");
  button.setAttribute("aria-pressed", String(following));
  button.textContent = following ? "Following · Unfollow" : "Follow";
}

$("follow").addEventListener("click", async () => {
  const following = $("follow").getAttribute("aria-pressed") === "true";
  try {
    await api(following ? "DELETE" : "PUT", `/v1/following/${found.id}`);
    setFollowing(!following);
    say(following ? `You no longer follow @${found.username}.` : `You follow @${found.username}.`, true);
    feed.restart();
  } catch (error) { fail(error); }
});

// --- the feed ------------------------------------------------------------------------

const feed = {
  cursor: null,
  loading: false,
  done: false,
  restart() {
    this.cursor = null;
    this.done = false;
    $("feed").replaceChildren();
    $("feed-end").hidden = true;
    this.more();
  },
  async more() {
    if (this.loading || this.done) return;
    this.loading = true;
    try {
      const query = new URLSearchParams({ limit: "10" });
      if (this.cursor) query.set("cursor", this.cursor);
      const page = await api("GET", `/v1/feed?${query}`);
      for (const post of page.items) $("feed").append(renderPost(post));
      this.cursor = page.next_cursor;
      this.done = page.next_cursor === null;
      $("more").hidden = this.done;
      $("feed-end").hidden = !this.done || $("feed").children.length === 0;
    } catch (error) { fail(error); } finally { this.loading = false; }
  },
};

$("more").addEventListener("click", () => feed.more());
new IntersectionObserver((entries) => {
  if (entries.some((entry) => entry.isIntersecting) && !$("app").hidden) feed.more();
}).observe($("sentinel"));

function renderPost(post) {
  const item = document.createElement("li");
  item.className = "post";
  item.dataset.postId = post.id;

  const header = document.createElement("header");
  header.textContent = `${post.author.display_name} · @${post.author.username}`;

  // Width and height are set, so nothing moves when the image arrives; the thumbnail comes
  // first, then the full image from the same S3 origin replaces it.
  const image = document.createElement("img");
  image.width = post.width;
  image.height = post.height;
  image.alt = post.caption || `A photo by @${post.author.username}`;
  image.src = post.thumbnail_url;
  image.addEventListener("load", () => {
    if (image.src === post.image_url) return;
    const full = new Image();
    full.onload = () => { image.src = post.image_url; };
    full.src = post.image_url;
  }, { once: true });

  const body = document.createElement("div");
  body.className = "body";
  const like = document.createElement("button");
  like.type = "button";
  like.className = "like";
  const show = (liked, count) => {
    like.setAttribute("aria-pressed", String(liked));
    like.textContent = `${liked ? "♥ Liked" : "♡ Like"} · ${count}`;
  };
  show(post.liked_by_me, post.like_count);
  like.addEventListener("click", async () => {
    const liked = like.getAttribute("aria-pressed") === "true";
    try {
      const result = await api(liked ? "DELETE" : "PUT", `/v1/posts/${post.id}/like`);
      show(result.liked, result.like_count);
    } catch (error) { fail(error); }
  });
  const caption = document.createElement("p");
  caption.className = "caption";
  caption.textContent = post.caption;
  body.append(like, caption);

  item.append(header, image, body);
  return item;
}

if (session.token) showSignedIn(); else showSignedOut();
