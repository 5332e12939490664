-- A ledger written by novita-video's schema 1, dumped with sqlite3's iterdump, in the state
-- that code left a folder used with two models (issue 20, case 4): c.txt (a cat / a dog)
-- run with the default model, then with --model kling-v1.6-t2v into the same --out:
-- the Kling clips replaced 0001-a-cat.mp4 and 0002-a-dog.mp4, and both models' rows name
-- those files (the later updated_at is the one whose clip is on disk).
BEGIN TRANSACTION;
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO "meta" VALUES('schema','1');
INSERT INTO "meta" VALUES('api','http://127.0.0.1:18731');
CREATE TABLE prompts (
    key TEXT PRIMARY KEY,
    idx INTEGER NOT NULL,
    line INTEGER NOT NULL,
    user_id TEXT,
    prompt TEXT NOT NULL,
    image_url TEXT,
    enable_prompt_expansion INTEGER NOT NULL,
    state TEXT NOT NULL,
    task_id TEXT,
    file TEXT,
    error TEXT,
    updated_at REAL NOT NULL
, model TEXT, request TEXT);
INSERT INTO "prompts" VALUES('a5ab30fd5ad54eab32123c7b1b70505060f1dc5ce6d5c9fb614c2c9c8deaf5e3',1,1,NULL,'a cat',NULL,1,'succeeded','88980bbd-1187-4a36-952a-d8f29fa10cb0','0001-a-cat.mp4',NULL,1.79652703198345875743e+09,'minimax-video-01','{"prompt": "a cat", "image_url": null, "enable_prompt_expansion": true}');
INSERT INTO "prompts" VALUES('5b50a337581d9a02c2a9e14ae29a58f7efbfe346440b896133262138b56cc80e',2,2,NULL,'a dog',NULL,1,'succeeded','622e70ba-0a4a-4c60-8889-554b6526a102','0002-a-dog.mp4',NULL,1.79652703198783588412e+09,'minimax-video-01','{"prompt": "a dog", "image_url": null, "enable_prompt_expansion": true}');
INSERT INTO "prompts" VALUES('0e3dbd1fad46e2a388097070eaea530f5e50b0b3346a09c9ef5596e730ee8d8b',1,1,NULL,'a cat',NULL,1,'succeeded','13533193-314e-4bca-b1ba-b6fc57a9caeb','0001-a-cat.mp4',NULL,1.79652703537174558636e+09,'kling-v1.6-t2v','{"prompt": "a cat", "negative_prompt": null, "duration": 5, "guidance_scale": null, "mode": null}');
INSERT INTO "prompts" VALUES('27965f97711ae3c4e70d425e24e44dbb17fb0b305c847bd532dba4d05fece490',2,2,NULL,'a dog',NULL,1,'succeeded','b50a133a-e624-449a-b15c-1d7bbad2e111','0002-a-dog.mp4',NULL,1.79652703537568974494e+09,'kling-v1.6-t2v','{"prompt": "a dog", "negative_prompt": null, "duration": 5, "guidance_scale": null, "mode": null}');
COMMIT;
