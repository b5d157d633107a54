// Shared helpers for the matrix-js-sdk end-to-end tests.
//
// The tests are started by `go test ./homeserver/jstest/`, which runs a real
// Switchboard homeserver, creates the users and passes them in:
//
//   HS_URL                          client-server API base URL
//   HS_SERVER_NAME                  the server's name (the part after ":" in user IDs)
//   <NAME>_USER_ID, <NAME>_PASSWORD one pair per user the Go test created (ALICE_…, BOB_…)
//
// Every wait here is bounded, so a missing endpoint or a server that never
// answers turns into a failed assertion that says what was awaited, never a
// hung test.

import { test } from "node:test";

import {
  ClientEvent,
  EventType,
  MatrixError,
  SyncState,
  createClient,
} from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

// The SDK logs every request and sync step at debug level, and some of its
// parts warn about things that are routine here. Keep the test output to
// errors; MATRIX_SDK_LOG=warn (or info, debug) shows more. The SDK's child
// loggers pin their own level to debug but copy the root's methodFactory
// when created, so the filter goes there.
const LEVELS = ["trace", "debug", "info", "warn", "error"];
const minLevel = LEVELS.indexOf(process.env.MATRIX_SDK_LOG || "error");
// Known noise, dropped unless MATRIX_SDK_LOG is debug or trace: the
// MatrixRTC session manager of matrix-js-sdk 37 logs this at error level for
// every state event of a room the sync loop has not stored yet, i.e. for
// every newly joined room.
const NOISE = [/^Got room state event for unknown room /];
const sdkFactory = logger.methodFactory;
// The SDK's log functions read the logger's prefix from `this`: keep it.
logger.methodFactory = function (method, level, name) {
  if (LEVELS.indexOf(method) < minLevel) return () => {};
  const log = sdkFactory.call(this, method, level, name);
  if (minLevel <= LEVELS.indexOf("debug")) return log;
  return function (...args) {
    if (!NOISE.some((re) => typeof args[0] === "string" && re.test(args[0]))) return log.apply(this, args);
  };
};
logger.rebuild();

// Per-request timeout for the SDK's HTTP calls (the /sync long-poll sets its
// own). Long enough for a slow CI machine, short enough to fail well before
// the Go side's timeout.
export const REQUEST_TIMEOUT_MS = 10_000;

export function requireEnv(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set: these tests need a running homeserver and users; ` +
        "run them with `go test ./homeserver/jstest/`",
    );
  }
  return value;
}

export const hsUrl = requireEnv("HS_URL");
export const serverName = requireEnv("HS_SERVER_NAME");

// testUser returns the credentials the Go test made for a user, e.g.
// testUser("alice") → { userId: "@alice:…", localpart: "alice", password }.
export function testUser(name) {
  const prefix = name.toUpperCase();
  const userId = requireEnv(`${prefix}_USER_ID`);
  return {
    userId,
    localpart: userId.slice(1, userId.indexOf(":")),
    password: requireEnv(`${prefix}_PASSWORD`),
  };
}

// newClient returns a matrix-js-sdk client for the test homeserver; pass
// accessToken/userId/deviceId for a logged-in one.
export function newClient(opts = {}) {
  return createClient({
    baseUrl: hsUrl,
    localTimeoutMs: REQUEST_TIMEOUT_MS,
    ...opts,
  });
}

// login signs a user in the way the SDK recommends: loginRequest on an
// anonymous client, then a new client built from the response.
export async function login(user, deviceName = "matrix-js-sdk test") {
  const res = await newClient().loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: user.localpart },
    password: user.password,
    initial_device_display_name: deviceName,
  });
  return newClient({
    userId: res.user_id,
    accessToken: res.access_token,
    deviceId: res.device_id,
  });
}

// rejectsWithMatrixError asserts that promise rejects with the SDK's
// MatrixError carrying errcode (and httpStatus, when given), and returns the
// error for further checks.
export async function rejectsWithMatrixError(promise, errcode, httpStatus) {
  let err;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  if (err === undefined) {
    throw new Error(`expected the request to fail with ${errcode}, but it succeeded`);
  }
  if (!(err instanceof MatrixError)) {
    throw new Error(`expected a MatrixError ${errcode}, got ${err?.name}: ${err?.message}`, { cause: err });
  }
  if (err.errcode !== errcode || (httpStatus !== undefined && err.httpStatus !== httpStatus)) {
    throw new Error(
      `expected ${errcode}${httpStatus !== undefined ? ` (HTTP ${httpStatus})` : ""}, ` +
        `got ${err.errcode} (HTTP ${err.httpStatus}): ${err.data?.error ?? err.message}`,
      { cause: err },
    );
  }
  return err;
}

// withTimeout rejects with a message naming what was awaited when promise
// does not settle within ms.
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// waitForEvent resolves with the arguments of the first `event` that emitter
// emits for which matches(...args) is true, and rejects after ms. Register
// it before the action that causes the event, so the event cannot be missed.
export function waitForEvent(emitter, event, matches, ms, what) {
  let listener;
  const seen = new Promise((resolve, reject) => {
    listener = (...args) => {
      try {
        if (matches(...args)) resolve(args);
      } catch (err) {
        reject(err);
      }
    };
    emitter.on(event, listener);
  });
  return withTimeout(seen, ms, what).finally(() => emitter.off(event, listener));
}

// startSyncing starts the SDK's own sync loop (startClient) and resolves once
// it reports PREPARED or SYNCING: the initial /sync has been processed and
// the client's rooms are populated. On timeout the error lists the sync
// states seen and the last error the SDK reported.
export async function startSyncing(client, { initialSyncLimit = 5, timeoutMs = 10_000 } = {}) {
  const states = [];
  let lastError;
  const onSync = (state, _prev, data) => {
    states.push(state);
    if (data?.error) lastError = data.error;
  };
  client.on(ClientEvent.Sync, onSync);
  try {
    const ready = waitForEvent(
      client,
      ClientEvent.Sync,
      (state) => state === SyncState.Prepared || state === SyncState.Syncing,
      timeoutMs,
      `${client.getUserId()}'s sync loop to reach PREPARED`,
    );
    // Promise.all so that a failing startClient cannot leave `ready` to
    // reject later, unobserved.
    await Promise.all([ready, client.startClient({ initialSyncLimit })]);
  } catch (err) {
    const detail = lastError
      ? `; last sync error: ${lastError.errcode ?? lastError.name} ${lastError.httpStatus ?? ""} ${lastError.data?.error ?? lastError.message}`
      : "";
    throw new Error(`${err.message} (sync states seen: ${states.join(", ") || "none"}${detail})`, { cause: err });
  } finally {
    client.off(ClientEvent.Sync, onSync);
  }
}

// untilSynced resolves once holds() is true of the client's state, checking
// now and again after every /sync response the client has processed
// (ClientEvent.Sync fires once a whole response is applied, so rooms,
// members and names are consistent then). Rejects after ms.
export async function untilSynced(client, holds, ms, what) {
  if (holds()) return;
  await waitForEvent(client, ClientEvent.Sync, () => holds(), ms, what);
}

// liveMessageFrom matches the arguments of a Room.timeline event: a live
// m.room.message from sender in roomId (not back-pagination, not a local
// echo of one's own message).
export function liveMessageFrom(sender, roomId) {
  return (event, room, toStartOfTimeline, removed, data) =>
    room?.roomId === roomId &&
    !toStartOfTimeline &&
    !removed &&
    data?.liveEvent !== false &&
    event.getType() === EventType.RoomMessage &&
    event.getSender() === sender;
}

// stepper returns step(name, fn): a test that is one step of a story. Once
// a step fails the later ones are skipped instead of failing for the same
// reason.
export function stepper() {
  let broken = false;
  return function step(name, fn) {
    test(name, async (t) => {
      if (broken) {
        t.skip("an earlier step failed");
        return;
      }
      try {
        await fn(t);
      } catch (err) {
        broken = true;
        throw err;
      }
    });
  };
}
