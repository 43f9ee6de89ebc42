"""An HTML page template for `dvc plots show/diff` that renders without a network.

DVC's default page loads Vega, Vega-Lite and Vega-Embed from a CDN (dvc-render's VegaRenderer
script tags), so on a machine behind a firewall `dvc plots diff --open` shows an empty page. This
template inlines those libraries instead: the bundle comes from `vl-convert-python` (the Vega
project's own packaging, pinned in requirements.lock) and is written to
`.dvc/plots/offline_page.html`, which `.dvc/config` names as `plots.html_template`. The template
leaves out DVC's `{scripts}` placeholder, so no CDN tag is added.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.atomic import atomic_file

TEMPLATE_PATH = Path(".dvc/plots/offline_page.html")
# DVC's plot templates declare Vega-Lite v5 specs.
VEGA_LITE_VERSION = "5.21"

_PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Vega {vega}, Vega-Lite {vega_lite}, Vega-Embed {vega_embed}, inlined by
         `python -m pipeline plots-template` (vl-convert-python): renders offline. -->
    <script type="text/javascript">
{bundle}
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def offline_page() -> str:
    """The template's text: deterministic for the pinned vl-convert-python."""
    import vl_convert

    versions = {
        "{vega}": vl_convert.get_vega_version(),
        "{vega_lite}": VEGA_LITE_VERSION,
        "{vega_embed}": vl_convert.get_vega_embed_version(),
    }
    page = _PAGE
    for placeholder, value in versions.items():
        page = page.replace(placeholder, value)
    # Inserted last: DVC fills `{refresh_tag}` and `{plot_divs}` by plain substring replacement.
    return page.replace("{bundle}", vl_convert.javascript_bundle(vl_version=VEGA_LITE_VERSION))


def write_offline_page(path: Path = TEMPLATE_PATH) -> Path:
    with atomic_file(path) as handle:
        handle.write(offline_page())
    return path
