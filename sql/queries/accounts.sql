-- name: create-user(username, display_name, password_hash)^
-- Nothing comes back when the username is taken (usernames are stored lower-case).
INSERT INTO users (username, display_name, password_hash)
VALUES (:username, :display_name, :password_hash)
ON CONFLICT (username) DO NOTHING
RETURNING user_id AS id, username, display_name, created_at;

-- name: credentials(username)^
SELECT user_id, password_hash, token_key FROM users WHERE username = :username;

-- name: token-key(user_id)$
-- The key an account's tokens must name; nothing when the account is gone.
SELECT token_key FROM users WHERE user_id = :user_id;

-- name: revoke-tokens(user_id)$
-- Every token issued before this names the old key and stops working.
UPDATE users SET token_key = gen_random_uuid() WHERE user_id = :user_id RETURNING token_key;

-- name: update-password-hash(user_id, password_hash)!
UPDATE users SET password_hash = :password_hash WHERE user_id = :user_id;

-- name: profile(username, viewer_id)^
-- Counted, not stored: always equal to the rows, whatever ran concurrently. `following`:
-- the viewer follows this user; `followed_by`: this user follows the viewer.
SELECT u.user_id AS id, u.username, u.display_name, u.created_at,
       (SELECT count(*) FROM follows WHERE followee_id = u.user_id) AS followers_count,
       (SELECT count(*) FROM follows WHERE follower_id = u.user_id) AS following_count,
       (SELECT count(*) FROM posts WHERE author_id = u.user_id) AS posts_count,
       EXISTS (SELECT 1 FROM follows
               WHERE follower_id = :viewer_id AND followee_id = u.user_id) AS following,
       EXISTS (SELECT 1 FROM follows
               WHERE follower_id = u.user_id AND followee_id = :viewer_id) AS followed_by
FROM users u
WHERE u.username = :username;

-- name: username(user_id)$
SELECT username FROM users WHERE user_id = :user_id;

-- name: user-id(username)$
SELECT user_id FROM users WHERE username = :username;

-- name: follow(follower_id, followee_id)$
-- True when the followee exists (followed now or already); false when there is no such user.
WITH target AS (SELECT user_id FROM users WHERE user_id = :followee_id),
     added AS (
         INSERT INTO follows (follower_id, followee_id)
         SELECT :follower_id, user_id FROM target
         ON CONFLICT (follower_id, followee_id) DO NOTHING
     )
SELECT EXISTS (SELECT 1 FROM target);

-- name: unfollow(follower_id, followee_id)$
WITH target AS (SELECT user_id FROM users WHERE user_id = :followee_id),
     removed AS (
         DELETE FROM follows
         WHERE follower_id = :follower_id AND followee_id IN (SELECT user_id FROM target)
     )
SELECT EXISTS (SELECT 1 FROM target);

-- name: followers-page(user_id, after_id, page_size)
-- Keyset page over idx_follows_followee_follower.
SELECT u.user_id AS id, u.username, u.display_name
FROM follows f
JOIN users u ON u.user_id = f.follower_id
WHERE f.followee_id = :user_id AND f.follower_id > :after_id
ORDER BY f.follower_id
LIMIT :page_size;

-- name: following-page(user_id, after_id, page_size)
-- Keyset page over UNIQUE (follower_id, followee_id).
SELECT u.user_id AS id, u.username, u.display_name
FROM follows f
JOIN users u ON u.user_id = f.followee_id
WHERE f.follower_id = :user_id AND f.followee_id > :after_id
ORDER BY f.followee_id
LIMIT :page_size;
