-- A ledger written by novita-video's schema 1 (the code before prompts were known by what
-- they are), dumped with sqlite3's iterdump. Made by running that code's command against
-- the simulator (python -m novita_video.testing --port 18731 --api-key sk-fixture):
--   novita-video batch p.txt --out v1 --rpm 6000
--       p.txt: a panda in bamboo / a red kite at dusk / a panda in bamboo / a lighthouse in a storm
--   novita-video batch h.jsonl --out v1 --model minimax-hailuo-02 --rpm 6000
--       h.jsonl: {"prompt": "a fox in snow", "id": "fox", "duration": 6} / {"prompt": "a heron fishing"}
-- Keys are that code's: sha256 of the line position with the fields.
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
INSERT INTO "prompts" VALUES('1c61ecb311f0a360ed86a4b7c3d001bc3ec8ae8fb94219803071ef3987b1e11d',1,1,NULL,'a panda in bamboo',NULL,1,'succeeded','ee194e24-c740-4454-a788-a82ae42af182','0001-a-panda-in-bamboo.mp4',NULL,1.79652702738183522226e+09,'minimax-video-01','{"prompt": "a panda in bamboo", "image_url": null, "enable_prompt_expansion": true}');
INSERT INTO "prompts" VALUES('d0aa50c70fa19331c797c23f867df96340ae49c08832c98eea3ffd265b8c1933',2,2,NULL,'a red kite at dusk',NULL,1,'succeeded','186378ca-d190-4d86-9dd0-95c4bbff1189','0002-a-red-kite-at-dusk.mp4',NULL,1.7965270273839492798e+09,'minimax-video-01','{"prompt": "a red kite at dusk", "image_url": null, "enable_prompt_expansion": true}');
INSERT INTO "prompts" VALUES('1003fa9e963ec8767beae3c082c7bb172557c060bf851a77769f4f680a415e01',3,3,NULL,'a panda in bamboo',NULL,1,'succeeded','ef85443c-0227-47d9-8003-f7dcef04e60f','0003-a-panda-in-bamboo.mp4',NULL,1.79652702739397144311e+09,'minimax-video-01','{"prompt": "a panda in bamboo", "image_url": null, "enable_prompt_expansion": true}');
INSERT INTO "prompts" VALUES('fb1a51c0b72c6c7f124ae92939c2f4c297aeac7ce3e9302a0cad2f8fba0206f4',4,4,NULL,'a lighthouse in a storm',NULL,1,'succeeded','feaab146-0c0c-4423-8021-911c3d6b0ea6','0004-a-lighthouse-in-a-storm.mp4',NULL,1.79652702740618681908e+09,'minimax-video-01','{"prompt": "a lighthouse in a storm", "image_url": null, "enable_prompt_expansion": true}');
INSERT INTO "prompts" VALUES('add2c393900c95df58bf9308e2bfbdd49352d1e7807b1a0f0367f71122e68d8f',1,1,'fox','a fox in snow',NULL,1,'succeeded','52b7b577-b758-4826-89ca-9fccae5d5be7','0001-a-fox-in-snow.mp4',NULL,1.79652702968372583389e+09,'minimax-hailuo-02','{"prompt": "a fox in snow", "image": null, "end_image": null, "duration": 6, "resolution": "768P", "enable_prompt_expansion": true, "fast_pretreatment": false}');
INSERT INTO "prompts" VALUES('c40988f378922b7cc1637c24ac8bc8264fccf96b3b0a7ede14ce0807746256df',2,2,NULL,'a heron fishing',NULL,1,'succeeded','f722d6e8-b7b9-4ed7-aee1-26939b4a116c','0002-a-heron-fishing.mp4',NULL,1.7965270296877536774e+09,'minimax-hailuo-02','{"prompt": "a heron fishing", "image": null, "end_image": null, "duration": 6, "resolution": "768P", "enable_prompt_expansion": true, "fast_pretreatment": false}');
COMMIT;
