"""The review page's HTML, JS and CSS, shipped as package data (no CDN: works offline)."""
