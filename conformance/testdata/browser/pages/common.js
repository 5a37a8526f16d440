// What both test pages share. report(ev), which the pages call, is
// drive.mjs's binding (window.report).

// probeWebSocket opens a raw WebSocket and resolves with "open" or with
// how it failed: the Origin allow-list test uses it.
window.probeWebSocket = (url, protocols) =>
  new Promise((resolve) => {
    const ws = new WebSocket(url, protocols);
    ws.onopen = () => {
      ws.close();
      resolve('open');
    };
    ws.onclose = (ev) => resolve(`closed ${ev.code}`);
  });
