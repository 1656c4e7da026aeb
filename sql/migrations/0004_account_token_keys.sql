-- Every token names its account's current key. Revoking an account's tokens gives it a new key,
-- and a database made anew under the same signing secret gives every account one nobody has
-- seen: either way older tokens stop working, even where a new account reuses an old user_id.
ALTER TABLE users ADD COLUMN token_key uuid NOT NULL DEFAULT gen_random_uuid();
