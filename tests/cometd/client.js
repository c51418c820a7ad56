// Test harness: the real CometD JavaScript client (long-polling through
// cometd-nodejs-client's XMLHttpRequest shim) against ors's GMS endpoint.
//
// usage: node client.js <cometd url> <gms_user> <expected message count> <timeout ms>
//
// Prints `READY` once the subscription to /_genesys succeeded, then one line
// `MESSAGE <json>` per message received (the message's data), and after the
// expected count disconnects and exits 0. Exits 1 with a reason on stderr
// when the handshake or subscription fails or the timeout passes first.
// Both packages are ES modules, hence `import` (package.json has
// "type": "module").

import { adapt } from "cometd-nodejs-client";
import { CometD } from "cometd";

const [url, gmsUser, expectedText, timeoutText] = process.argv.slice(2);
const expected = Number.parseInt(expectedText, 10);
const timeoutMs = Number.parseInt(timeoutText, 10);
if (!url || gmsUser === undefined || !Number.isInteger(expected) || !Number.isInteger(timeoutMs)) {
    console.error("usage: node client.js <cometd url> <gms_user> <expected message count> <timeout ms>");
    process.exit(2);
}

function fail(reason) {
    console.error(`FAIL ${reason}`);
    process.exit(1);
}

adapt();
const cometd = new CometD();
cometd.configure({
    url,
    requestHeaders: { gms_user: gmsUser },
    logLevel: "info",
});

let received = 0;
let subscribed = false;

const timer = setTimeout(() => {
    fail(`timed out after ${timeoutMs} ms with ${received} of ${expected} messages`);
}, timeoutMs);

// A reply's outcome as JSON (failure objects hold the transport and the
// request, which are circular).
function describe(reply) {
    const failure = reply.failure || {};
    return JSON.stringify({
        channel: reply.channel,
        successful: reply.successful,
        error: reply.error,
        reason: failure.reason,
        httpCode: failure.httpCode,
        connectionType: failure.connectionType,
        exception: failure.exception && String(failure.exception),
    });
}

function finish() {
    cometd.disconnect(() => {
        clearTimeout(timer);
        process.exit(0);
    });
}

cometd.handshake((reply) => {
    if (!reply.successful) {
        // The client tries WebSocket first; the server offers long-polling
        // only, so that attempt fails and the client falls back on its own.
        if (reply.failure && reply.failure.connectionType === "websocket") {
            console.error(`handshake over websocket failed, falling back: ${describe(reply)}`);
            return;
        }
        fail(`handshake: ${describe(reply)}`);
    }
    if (subscribed) {
        return;
    }
    subscribed = true;
    cometd.subscribe(
        "/_genesys",
        (message) => {
            received += 1;
            process.stdout.write(`MESSAGE ${JSON.stringify(message.data)}\n`);
            if (received === expected) {
                finish();
            }
        },
        (subscribeReply) => {
            if (!subscribeReply.successful) {
                fail(`subscribe: ${describe(subscribeReply)}`);
            }
            process.stdout.write("READY\n");
            if (expected === 0) {
                finish();
            }
        },
    );
});
