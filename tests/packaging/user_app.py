"""A user's own script, type-checked with ``mypy --strict`` against an installed novita-video."""

import anyio

import novita_video
from novita_video.testing import FakeNovita


async def main() -> None:
    async with FakeNovita() as fake:
        async with novita_video.Client(fake.api_key, base_url=fake.url) as client:
            request = novita_video.HailuoRequest("a kite", duration=10)
            async for outcome in client.generate([request, "a red panda"]):
                url: str | None = outcome.video_url
                error: novita_video.NovitaError | None = outcome.error
                print(outcome.index, url or error)


anyio.run(main)
