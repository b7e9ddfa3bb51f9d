"""midrun's HTTP/WebSocket server: ComfyUI's API (so its frontend and clients work) plus
midrun's own control API, on Starlette and uvicorn."""
