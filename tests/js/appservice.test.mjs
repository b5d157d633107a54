// An application service built on matrix-bot-sdk, an appservice library
// we did not write, runs unmodified against Switchboard: the homeserver
// loads its registration, asks it about a user in its namespace (the
// appservice creates the ghost with m.login.application_service), pushes it
// the ghost's invite and a user's message as transactions, and the ghost
// joins and replies through the appservice's intent. Alice, a normal user
// on matrix-js-sdk, sees all of it through her own sync loop.
// Run through `go test ./homeserver/jstest/ -run TestAppservice`, which
// writes the registration, starts the homeserver with it and passes it in
// as AS_REGISTRATION (JSON; its url is where this appservice listens).

import assert from "node:assert/strict";
import Module, { createRequire } from "node:module";
import { after, before, describe } from "node:test";

import { EventType, Preset, RoomEvent } from "matrix-js-sdk";

import {
  hsUrl,
  liveMessageFrom,
  login,
  requireEnv,
  serverName,
  startSyncing,
  stepper,
  testUser,
  untilSynced,
  waitForEvent,
  withTimeout,
} from "./helpers.mjs";

// matrix-bot-sdk loads its encryption engine, the native binding in
// @matrix-org/matrix-sdk-crypto-nodejs, as soon as it is imported
// (lib/index.js requires e2ee/CryptoClient.js, which requires the binding),
// even in an appservice that never encrypts. That package installs without
// the binary: its postinstall script downloads it from GitHub (which these
// machines cannot reach; the script logs the failure and exits 0), and npm
// has no copy. Where the binding does not load, a placeholder module stands
// in for it that throws as soon as the SDK touches it, so nothing here can
// quietly run without encryption that it needed: this appservice does not
// encrypt (no cryptoStorage), and the SDK only touches the binding then.
const require = createRequire(import.meta.url);
function standInForMissingCryptoBinding() {
  const botRequire = createRequire(require.resolve("matrix-bot-sdk"));
  const path = botRequire.resolve("@matrix-org/matrix-sdk-crypto-nodejs");
  let loadError;
  try {
    botRequire(path);
    return; // the real binding is installed: use it
  } catch (err) {
    loadError = err;
  }
  const missing = new Module(path);
  missing.filename = path;
  missing.loaded = true;
  missing.exports = new Proxy(
    {},
    {
      get(_target, key) {
        // What module loaders and util.inspect probe for: not a use.
        if (typeof key === "symbol" || key === "then" || key === "__esModule") return undefined;
        throw new Error(
          `matrix-bot-sdk used its encryption engine (${String(key)}), but the native ` +
            `@matrix-org/matrix-sdk-crypto-nodejs binding did not load: ${loadError.message.split("\n")[0]}`,
        );
      },
    },
  );
  require.cache[path] = missing;
}
standInForMissingCryptoBinding();
const { Appservice, ConsoleLogger, LogLevel, LogService, MemoryStorageProvider } = await import("matrix-bot-sdk");

// The bot SDK logs every request it serves (morgan) and every event it
// processes at info level; keep errors, as helpers.mjs does for
// matrix-js-sdk (MATRIX_SDK_LOG=info or debug shows more). Known noise,
// dropped unless MATRIX_SDK_LOG is debug or trace: begin() registers the
// appservice's sender, which the homeserver made when it loaded the
// registration; the SDK expects M_USER_IN_USE then and carries on, but its
// HTTP client has logged the answer as an error already.
const logLevel = LogLevel.fromString(process.env.MATRIX_SDK_LOG || "error", LogLevel.ERROR);
class QuietLogger extends ConsoleLogger {
  error(module, ...args) {
    const senderInUse = module === "MatrixHttpClient" && args.some((a) => a?.errcode === "M_USER_IN_USE");
    if (!senderInUse || logLevel.includes(LogLevel.DEBUG)) super.error(module, ...args);
  }
}
LogService.setLogger(new QuietLogger());
LogService.setLevel(logLevel);

const alice = testUser("alice");
const registration = JSON.parse(requireEnv("AS_REGISTRATION"));
const ghostId = `@jsbot_echo:${serverName}`;
const GHOST_NAME = "Echo (matrix-bot-sdk)";

// How long one step may take: a transaction is pushed as soon as the event
// is written, and a sync long-poll wakes at once.
const STEP_MS = 10_000;

// What the appservice saw and did, for the assertions and for failure
// messages: a handler that fails cannot fail the test by itself (the SDK
// calls it from its HTTP server), so its errors are collected here.
const queriedUsers = [];
const handlerErrors = [];
function recordError(what) {
  return (err) => {
    const detail = err?.body?.errcode ? `${err.body.errcode} (HTTP ${err.statusCode}): ${err.body.error}` : err?.message;
    handlerErrors.push(`${what}: ${detail ?? err}`);
  };
}

// within is withTimeout with the appservice's handler errors (if any) in
// the failure message.
async function within(promise, what) {
  try {
    return await withTimeout(promise, STEP_MS, what);
  } catch (err) {
    if (handlerErrors.length === 0) throw err;
    throw new Error(`${err.message}; the appservice's handlers failed: ${handlerErrors.join("; ")}`, { cause: err });
  }
}

// The appservice, as its README shows one: options, event handlers, begin().
const appservice = new Appservice({
  homeserverName: serverName,
  homeserverUrl: hsUrl,
  bindAddress: "127.0.0.1",
  port: Number(new URL(registration.url).port),
  registration,
  storage: new MemoryStorageProvider(),
});

// The homeserver asks about a user in the namespace that does not exist
// yet (here: when Alice invites it); answering with a profile makes the SDK
// register the ghost and set its display name before it replies.
appservice.on("query.user", (userId, createUser) => {
  queriedUsers.push(userId);
  createUser(userId === ghostId ? { display_name: GHOST_NAME } : false);
});

// The echo bot: the ghost accepts invites and repeats what people say.
const ghost = () => appservice.getIntentForUserId(ghostId);
appservice.on("room.invite", (roomId, event) => {
  if (event.state_key === ghostId) ghost().joinRoom(roomId).catch(recordError(`join ${roomId}`));
});
appservice.on("room.message", (roomId, event) => {
  // The appservice also receives its own users' messages: no echo of echoes.
  if (appservice.isNamespacedUser(event.sender) || typeof event.content?.body !== "string") return;
  ghost()
    .sendText(roomId, `echo: ${event.content.body}`)
    .catch(recordError(`reply in ${roomId}`));
});

const step = stepper();

describe("a matrix-bot-sdk appservice", () => {
  let a;
  let roomId;

  before(async () => {
    a = await login(alice, "Alice's browser");
  });

  after(() => {
    a?.stopClient();
    appservice.stop();
  });

  step("starts, and the homeserver knows its as_token", async () => {
    // begin() listens on the registration's url and registers the sender
    // (the homeserver may have made it already: M_USER_IN_USE is fine).
    await within(appservice.begin(), "the appservice to start");
    assert.equal(appservice.botUserId, `@${registration.sender_localpart}:${serverName}`);
    const whoami = await within(appservice.botClient.getWhoAmI(), "whoami with the as_token");
    assert.equal(whoami.user_id, appservice.botUserId);
  });

  step("Alice's client finishes its initial sync", async () => {
    await startSyncing(a);
  });

  step("Alice invites the ghost: the appservice creates it and hears of the invite", async () => {
    const created = await a.createRoom({ name: "Echo chamber", preset: Preset.PrivateChat });
    roomId = created.room_id;
    await untilSynced(a, () => a.getRoom(roomId)?.getMyMembership() === "join", STEP_MS, "Alice's new room in /sync");

    // Only a transaction brings the SDK's room.invite: it is what the
    // homeserver pushed, not something the appservice asked for.
    const pushed = waitForEvent(
      appservice,
      "room.invite",
      (rid, event) => rid === roomId && event.state_key === ghostId,
      STEP_MS,
      "the ghost's invite to reach the appservice in a transaction",
    );
    assert.deepEqual(await a.invite(roomId, ghostId), {});
    // The ghost did not exist: the homeserver asked the appservice, which
    // registered it, before it accepted the invite.
    assert.deepEqual(queriedUsers, [ghostId]);
    const [, inviteEvent] = await within(pushed, "the invite transaction");
    assert.equal(inviteEvent.sender, alice.userId);
    assert.equal(inviteEvent.content.membership, "invite");
  });

  step("the ghost joins, and Alice sees it under the name the appservice gave it", async () => {
    await within(
      untilSynced(
        a,
        () => a.getRoom(roomId)?.getMember(ghostId)?.membership === "join",
        STEP_MS,
        "the ghost's join to reach Alice through /sync",
      ),
      "the ghost's join",
    );
    const member = a.getRoom(roomId).getMember(ghostId);
    assert.equal(member.name, GHOST_NAME);
    assert.deepEqual(
      a
        .getRoom(roomId)
        .getJoinedMembers()
        .map((m) => m.userId)
        .sort(),
      [alice.userId, ghostId].sort(),
    );
  });

  step("Alice speaks, the appservice hears it and the ghost's reply reaches Alice", async () => {
    const heard = waitForEvent(
      appservice,
      "room.message",
      (rid, event) => rid === roomId && event.sender === alice.userId,
      STEP_MS,
      "Alice's message to reach the appservice in a transaction",
    );
    // The ghost's reply goes back to the appservice too (it receives every
    // event of a room its users are in). Awaiting it also means no
    // transaction is in flight when the test stops the appservice.
    const echoed = waitForEvent(
      appservice,
      "room.message",
      (rid, event) => rid === roomId && event.sender === ghostId,
      STEP_MS,
      "the ghost's own reply to reach the appservice in a transaction",
    );
    const replied = waitForEvent(
      a,
      RoomEvent.Timeline,
      liveMessageFrom(ghostId, roomId),
      STEP_MS,
      "the ghost's reply on Alice's timeline",
    );
    const sent = await a.sendTextMessage(roomId, "Is anybody out there?");

    const [, pushedEvent] = await within(heard, "Alice's message transaction");
    assert.equal(pushedEvent.event_id, sent.event_id);
    assert.equal(pushedEvent.content.body, "Is anybody out there?");

    const [reply] = await within(replied, "the ghost's reply");
    assert.equal(reply.getContent().msgtype, "m.text");
    assert.equal(reply.getContent().body, "echo: Is anybody out there?");
    // What Alice's app renders: her message, then the ghost's answer.
    const bodies = a
      .getRoom(roomId)
      .getLiveTimeline()
      .getEvents()
      .filter((e) => e.getType() === EventType.RoomMessage)
      .map((e) => `${e.getSender()}: ${e.getContent().body}`);
    assert.deepEqual(bodies, [`${alice.userId}: Is anybody out there?`, `${ghostId}: echo: Is anybody out there?`]);
    const [, echoEvent] = await within(echoed, "the ghost's reply transaction");
    assert.equal(echoEvent.event_id, reply.getId());
    assert.deepEqual(handlerErrors, []);
  });
});
