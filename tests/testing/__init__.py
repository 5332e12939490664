"""The simulator (novita_video.testing) itself."""
