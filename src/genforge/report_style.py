"""The report's stylesheet, kept apart from the code that fills the page."""

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; background: #f4f5f7; color: #1f2328; }
header { background: #24292f; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #c9d1d9; font-size: 13px; }
main { padding: 20px 32px; }
h2 { font-size: 17px; margin: 24px 0 10px; }
.cards { display: flex; flex-wrap: wrap; gap: 16px; }
.card { background: #fff; border: 1px solid #d0d7de; border-radius: 8px; padding: 14px 16px; flex: 1 1 380px; max-width: 640px; }
.card h3 { margin: 0 0 6px; font-size: 16px; }
.kind { font-size: 11px; font-weight: 600; text-transform: uppercase; background: #ddf4ff; color: #0969da; border-radius: 10px; padding: 2px 8px; margin-left: 6px; vertical-align: middle; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; font-size: 13px; margin: 8px 0; }
.facts dt { color: #57606a; } .facts dd { margin: 0; }
figure { margin: 10px 0 0; }
figcaption { font-size: 12px; color: #57606a; margin-bottom: 4px; }
img.grid { image-rendering: pixelated; width: 100%; max-width: 360px; border: 1px solid #d0d7de; background: #000; }
img.curves { width: 100%; border: 1px solid #eaeef2; }
.missing { color: #8c959f; font-size: 13px; font-style: italic; }
table { border-collapse: collapse; background: #fff; border: 1px solid #d0d7de; font-size: 14px; min-width: 480px; }
th, td { padding: 6px 14px; border-bottom: 1px solid #eaeef2; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; font-weight: 600; }
td.metric, th.metric { text-align: left; }
td.metric small { color: #8c959f; margin-left: 4px; }
td.lead { background: #dafbe1; font-weight: 700; color: #116329; }
td.na { color: #8c959f; }
ul { padding-left: 20px; } li { margin: 3px 0; font-size: 14px; }
.notes li { color: #9a6700; }
"""
