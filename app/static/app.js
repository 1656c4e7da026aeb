// Monogram's web client: a plain client of the JSON API, no build step. Its one dependency,
// Wolt's BlurHash decoder, is vendored beside it (blurhash.mjs).
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
  $("my-profile").hidden = false;
  $("logout").hidden = false;
  feed.restart();
}

function showSignedOut() {
  $("auth").hidden = false;
  $("app").hidden = true;
  $("whoami").hidden = true;
  $("my-profile").hidden = true;
  $("logout").hidden = true;
}

// --- placeholders --------------------------------------------------------------------

// Loaded once, on first use; a client without it just shows the grey background.
let blurhashDecoder = null;
function decodeBlurhash() {
  blurhashDecoder ??= import("/static/blurhash.mjs").then((module) => module.decode);
  return blurhashDecoder;
}

// Paints the image's BlurHash behind it until the image itself has loaded.
async function paintPlaceholder(image, hash, width, height) {
  if (!hash || !width || !height) return;
  const w = width >= height ? 32 : Math.max(1, Math.round((32 * width) / height));
  const h = height >= width ? 32 : Math.max(1, Math.round((32 * height) / width));
  let pixels;
  try { pixels = (await decodeBlurhash())(hash, w, h); } catch { return; }
  if (image.complete && image.naturalWidth > 0) return;  // the image won the race
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  canvas.getContext("2d").putImageData(new ImageData(pixels, w, h), 0, 0);
  canvas.toBlob((blob) => {
    if (!blob || (image.complete && image.naturalWidth > 0)) return;
    const url = URL.createObjectURL(blob);
    image.style.backgroundImage = `url("${url}")`;
    image.dataset.placeholder = "blurhash";
    image.addEventListener("load", () => {
      image.style.backgroundImage = "";
      delete image.dataset.placeholder;
      URL.revokeObjectURL(url);
    }, { once: true });
  });
}

// --- uploading and posting -----------------------------------------------------------

let uploaded = null;
const MAX_UPLOAD_BYTES = 10 * 1024 * 1024;
const TYPES_BY_EXTENSION = { jpg: "image/jpeg", jpeg: "image/jpeg", png: "image/png", heic: "image/heic", heif: "image/heic" };
const PROCESSING_PATIENCE_MS = 120000;

// V1: the service signs a form, the photo goes straight to S3 with it (the progress bar), the
// service checks what S3 holds, and a media worker makes the thumbnail and renditions
// ("Processing...") until the media is ready to post.
$("upload-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = event.currentTarget.file.files[0];
  if (!file) return;
  if (file.size > MAX_UPLOAD_BYTES) { fail(new ApiError(413, "payload_too_large", "")); return; }
  const extension = file.name.split(".").pop().toLowerCase();
  // Browsers often give HEIC files no type: the name says it. The service checks the bytes.
  const type = Object.values(TYPES_BY_EXTENSION).includes(file.type) ? file.type : (TYPES_BY_EXTENSION[extension] || file.type || "application/octet-stream");
  say("");
  const button = event.submitter;
  if (button) button.disabled = true;
  try {
    const form = await api("POST", "/v1/uploads", { content_type: type, bytes: file.size });
    await sendToStore(form, file, type);
    let media = await api("POST", `/v1/uploads/${form.upload_id}/complete`);
    say("Processing your photo...", true);
    media = await untilProcessed(media);
    if (media.status === "failed") {
      fail(new ApiError(422, media.failure, failureMessage(media.failure)));
      return;
    }
    uploaded = media;
    const preview = $("preview");
    preview.src = media.thumbnail_url;
    preview.width = Math.min(150, media.width);
    preview.height = Math.round((preview.width * media.height) / media.width);
    $("post-form").hidden = false;
    $("post-form").caption.focus();
    say("Uploaded. Add a caption and alt text, and post it.", true);
  } catch (error) {
    fail(error);
  } finally {
    // Full until the photo is ready (or refused): sent, then processed.
    $("upload-progress").hidden = true;
    if (button) button.disabled = false;
  }
});

// The presigned form's fields, then the file, POSTed to S3 (fetch cannot report progress).
function sendToStore(form, file, type) {
  return new Promise((resolve, reject) => {
    const progress = $("upload-progress");
    progress.hidden = false;
    progress.value = 0;
    const body = new FormData();
    for (const [name, value] of Object.entries(form.fields)) body.append(name, value);
    body.append("file", new Blob([file], { type }), file.name);
    const request = new XMLHttpRequest();
    request.open("POST", form.url);
    request.upload.onprogress = (e) => { if (e.lengthComputable) progress.value = (100 * e.loaded) / e.total; };
    request.onerror = () => reject(new ApiError(0, "network", "Cannot reach the image store."));
    request.onload = () => {
      if (request.status >= 200 && request.status < 300) { progress.value = 100; resolve(); return; }
      reject(new ApiError(request.status, "storage_error", "The image store refused the photo."));
    };
    request.send(body);
  });
}

async function untilProcessed(media) {
  const started = Date.now();
  while (media.status === "processing") {
    if (Date.now() - started > PROCESSING_PATIENCE_MS) {
      throw new ApiError(0, "slow", "Your photo is still being processed. Look for it again later.");
    }
    await new Promise((resolve) => setTimeout(resolve, 400));
    media = await api("GET", `/v1/media/${media.media_id}`);
  }
  return media;
}

function failureMessage(code) {
  switch (code) {
    case "undecodable_image": return "That photo could not be read: it may be damaged.";
    case "image_too_large": return "That photo has too many pixels.";
    default: return "That photo could not be processed.";
  }
}

$("post-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  try {
    await api("POST", "/v1/posts", {
      media_id: uploaded.media_id, caption: form.caption.value, alt_text: form.alt_text.value.trim(),
    });
    form.reset();
    form.hidden = true;
    $("upload-form").reset();
    say("Posted. Your followers will see it in their feeds.", true);
  } catch (error) { fail(error); }
});

// --- profiles and following --------------------------------------------------------

let found = null;

$("find-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const username = event.currentTarget.username.value.trim().toLowerCase();
  try {
    showProfile(await api("GET", `/v1/users/${encodeURIComponent(username)}`));
  } catch (error) {
    $("profile").hidden = true;
    fail(error.code === "not_found" ? new ApiError(404, "not_found", `Nobody is called ${username}.`) : error);
  }
});

$("my-profile").addEventListener("click", async () => {
  try { showProfile(await api("GET", "/v1/me")); } catch (error) { fail(error); }
});

function showProfile(profile) {
  found = profile;
  $("profile-name").textContent = `${profile.display_name} (@${profile.username})`;
  showCounts();
  const mine = profile.username === session.username;
  $("follow").hidden = mine;
  $("follows-you").hidden = mine || !profile.followed_by;
  setFollowing(profile.following);
  $("profile").hidden = false;
  say("");
  grid.restart(profile.username, mine);
}

function showCounts() {
  $("profile-counts").textContent =
    `${found.posts_count} posts · ${found.followers_count} followers · ${found.following_count} following`;
}

function setFollowing(following) {
  const button = $("follow");
  button.setAttribute("aria-pressed", String(following));
  button.textContent = following ? "Following · Unfollow" : "Follow";
}

// Optimistic: the button and the count change at once, and change back if the API refuses.
$("follow").addEventListener("click", async () => {
  const profile = found;
  const following = $("follow").getAttribute("aria-pressed") === "true";
  const change = (now) => {
    profile.following = now;
    profile.followers_count += now ? 1 : -1;
    if (found === profile) { setFollowing(now); showCounts(); }
  };
  change(!following);
  try {
    await api(following ? "DELETE" : "PUT", `/v1/following/${profile.id}`);
    say(following ? `You no longer follow @${profile.username}.` : `You follow @${profile.username}.`, true);
    feed.restart();
  } catch (error) {
    change(following);
    fail(error);
  }
});

// A profile's posts as a grid of thumbnails, page by page; on your own, each can be deleted.
const grid = {
  username: null,
  mine: false,
  cursor: null,
  restart(username, mine) {
    this.username = username;
    this.mine = mine;
    this.cursor = null;
    $("profile-grid").replaceChildren();
    this.more();
  },
  async more() {
    const username = this.username;
    const query = new URLSearchParams({ limit: "12" });
    if (this.cursor) query.set("cursor", this.cursor);
    try {
      const page = await api("GET", `/v1/users/${encodeURIComponent(username)}/posts?${query}`);
      if (username !== this.username) return;  // another profile was opened meanwhile
      for (const post of page.items) $("profile-grid").append(this.render(post));
      this.cursor = page.next_cursor;
      $("profile-more").hidden = page.next_cursor === null;
      $("profile-empty").hidden = $("profile-grid").children.length > 0;
    } catch (error) { fail(error); }
  },
  render(post) {
    const item = document.createElement("li");
    item.dataset.postId = post.id;
    const image = document.createElement("img");
    image.width = post.thumbnail_width || 150;
    image.height = post.thumbnail_height || 150;
    image.alt = describe(post);
    paintPlaceholder(image, post.blurhash, post.width, post.height);
    image.src = post.thumbnail_url;
    item.append(image);
    if (this.mine) {
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "delete secondary";
      remove.textContent = "Delete";
      remove.setAttribute("aria-label", `Delete the post: ${describe(post)}`);
      remove.addEventListener("click", () => this.remove(post, item));
      item.append(remove);
    }
    return item;
  },
  async remove(post, item) {
    if (!confirm("Delete this post? The photo is deleted too, for everyone.")) return;
    try {
      await api("DELETE", `/v1/posts/${post.id}`);
      item.remove();
      found.posts_count -= 1;
      showCounts();
      $("profile-empty").hidden = $("profile-grid").children.length > 0;
      say("Deleted.", true);
    } catch (error) { fail(error); }
  },
};

$("profile-more").addEventListener("click", () => grid.more());

function describe(post) {
  return post.alt_text || `A photo by @${post.author.username}`;
}

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

  // Width and height are set, so nothing moves when the image arrives. Its BlurHash is
  // painted first, then the thumbnail comes, then the full image from the same S3 origin.
  const image = document.createElement("img");
  image.width = post.width;
  image.height = post.height;
  image.alt = describe(post);
  paintPlaceholder(image, post.blurhash, post.width, post.height);
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
