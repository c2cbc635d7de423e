"""A web page and JSON API around the Predictor: `python -m grace_jax.serve` (docs/web.md).

Modules by concern: uploads (limits, private temporary files, probing), jobs (the bounded queue and
the one model thread), analysis (one job's Predictor call and pictures), demos (SynthFER demo clips),
app (the HTTP routes), server (assembly and the serve loop); the page itself is in page/.
"""
