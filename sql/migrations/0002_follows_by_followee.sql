-- Followers of a user, in follower order, read straight from an index: the
-- followers list pages through it by keyset instead of sorting every row.
-- (The seed's idx_follows_followee stays: the seed names it.)
CREATE UNIQUE INDEX idx_follows_followee_follower ON follows (followee_id, follower_id);
