import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Preset, RoomMemberEvent, NotificationCountType, ReceiptType } from "matrix-js-sdk";
import { login, startSyncing, testUser, untilSynced } from "./helpers.mjs";

const alice = testUser("alice");
const bob = testUser("bob");
const STEP_MS = 10_000;

describe("ephemeral", () => {
  let a, b, roomId, lastId;
  before(async () => {
    a = await login(alice, "A");
    b = await login(bob, "B");
    await Promise.all([startSyncing(a), startSyncing(b)]);
  });
  after(() => { a?.stopClient(); b?.stopClient(); });

  test("flow", async () => {
    roomId = (await a.createRoom({ preset: Preset.PublicChat })).room_id;
    await b.joinRoom(roomId);
    await untilSynced(a, () => a.getRoom(roomId)?.getJoinedMemberCount() === 2, STEP_MS, "join");
    await untilSynced(b, () => b.getRoom(roomId)?.getMyMembership() === "join", STEP_MS, "bob join");
    // typing
    await a.sendTyping(roomId, true, 30000);
    await untilSynced(b, () => b.getRoom(roomId)?.getMember(alice.userId)?.typing === true, STEP_MS, "alice typing at bob");
    await a.sendTyping(roomId, false);
    await untilSynced(b, () => b.getRoom(roomId)?.getMember(alice.userId)?.typing === false, STEP_MS, "alice stops");
    // unread
    await a.sendTextMessage(roomId, "hi");
    const sent = await a.sendMessage(roomId, { msgtype: "m.text", body: "bob!", "m.mentions": { user_ids: [bob.userId] } });
    lastId = sent.event_id;
    await untilSynced(b, () => b.getRoom(roomId)?.getUnreadNotificationCount(NotificationCountType.Total) === 2, STEP_MS, "unread 2");
    assert.equal(b.getRoom(roomId).getUnreadNotificationCount(NotificationCountType.Highlight), 1);
    // receipt
    const ev = b.getRoom(roomId).findEventById(lastId);
    await b.sendReadReceipt(ev, ReceiptType.Read);
    await untilSynced(a, () => a.getRoom(roomId)?.getEventReadUpTo(bob.userId) === lastId, STEP_MS, "bob's receipt at alice");
    await untilSynced(b, () => b.getRoom(roomId)?.getUnreadNotificationCount(NotificationCountType.Total) === 0, STEP_MS, "unread 0");
    // read markers
    await b.setRoomReadMarkers(roomId, lastId);
    await untilSynced(b, () => b.getRoom(roomId)?.getAccountData("m.fully_read")?.getContent().event_id === lastId, STEP_MS, "fully read");
  });
});
