-- ayudantia.lua: a Wireshark dissector for the ayudantia wire protocol, version 1.
--
-- The format is docs/protocol.md: every frame is a 10-byte header (magic "AY", version 1,
-- codec id, flags MORE/SIGNED/REFUSAL, content encoding, payload length big-endian) and its
-- payload. A message is one frame with MORE clear, or frames with MORE set then one without.
--
-- What this shows: each header field (ay.version, ay.codec, ay.flags.*, ay.encoding,
-- ay.length); frames split across TCP segments and several per segment (dissect_tcp_pdus);
-- on a message's last frame the whole message (ay.message.frames, ay.message.length) and,
-- for json, its payload through Wireshark's own JSON dissector (msgpack and cbor through
-- theirs when this Wireshark has them); refusal frames' reason and text; the keyed
-- handshake's HELLO and PROOF records; a signed frame's 32-byte HMAC tag (ay.tag); zstd and
-- lz4 data marked compressed (ay.compressed), not inflated.
--
-- Registered on the roles' default ports (Tareo 4445, Docencio 4446, eco 12345) and as a
-- heuristic on "AY\x01", so a class on --port 0 is found too.
--
-- A hostile or truncated capture must never raise a Lua error: every read is bounds
-- checked first, and a byte stream that is not frames is shown as such and skipped.
--
-- Use: ayudantia wireshark --install (or: tshark -X lua_script:PATH/ayudantia.lua).

local ay = Proto("ay", "Ayudantia protocol")

local HEADER = 10
local TAG = 32
local MAX_REFUSAL = 512
local MAX_FRAME = 64 * 1024 * 1024 -- the default max_message: past it, a header is not trusted
local MAX_KEPT = 16 * 1024 * 1024 -- bytes of a chunked message kept to show it whole

local FLAG_MORE, FLAG_SIGNED, FLAG_REFUSAL = 0x01, 0x02, 0x04

local CODECS = { [0] = "raw", [1] = "json", [2] = "pickle", [3] = "msgpack", [64] = "cbor" }
for id = 4, 63 do CODECS[id] = "reserved " .. id end
for id = 65, 255 do CODECS[id] = "plug-in " .. id end

local ENCODINGS = { [0] = "identity", [1] = "zstd", [2] = "lz4" }
for id = 3, 63 do ENCODINGS[id] = "reserved " .. id end
for id = 64, 255 do ENCODINGS[id] = "plug-in " .. id end

local REASONS = {
    [1] = "codec", [2] = "too_large", [3] = "signature",
    [4] = "version", [5] = "malformed", [6] = "busy",
}

local HANDSHAKE = { AYHELLO1 = "HELLO", AYPROOF1 = "PROOF" }

local f = {
    magic = ProtoField.bytes("ay.magic", "Magic"),
    version = ProtoField.uint8("ay.version", "Version", base.DEC),
    codec = ProtoField.uint8("ay.codec", "Codec", base.DEC, CODECS),
    flags = ProtoField.uint8("ay.flags", "Flags", base.HEX),
    more = ProtoField.bool("ay.flags.more", "MORE", 8, { "another frame follows", "last frame" },
        FLAG_MORE),
    signed = ProtoField.bool("ay.flags.signed", "SIGNED", 8, nil, FLAG_SIGNED),
    refusal = ProtoField.bool("ay.flags.refusal", "REFUSAL", 8, nil, FLAG_REFUSAL),
    reserved = ProtoField.uint8("ay.flags.reserved", "Reserved bits", base.HEX, nil, 0xF8),
    encoding = ProtoField.uint8("ay.encoding", "Content encoding", base.DEC, ENCODINGS),
    length = ProtoField.uint32("ay.length", "Payload length", base.DEC),
    data = ProtoField.bytes("ay.data", "Data"),
    tag = ProtoField.bytes("ay.tag", "HMAC-SHA256 tag"),
    compressed = ProtoField.bool("ay.compressed", "Compressed"),
    message_frames = ProtoField.uint32("ay.message.frames", "Frames in message", base.DEC),
    message_length = ProtoField.uint32("ay.message.length", "Message length", base.DEC),
    message_frame = ProtoField.uint32("ay.message.frame", "Frame of message", base.DEC),
    refusal_reason = ProtoField.uint8("ay.refusal.reason", "Reason", base.DEC, REASONS),
    refusal_text = ProtoField.string("ay.refusal.text", "Text"),
    handshake_type = ProtoField.string("ay.handshake.type", "Handshake record"),
    handshake_nonce = ProtoField.bytes("ay.handshake.nonce", "Nonce"),
    handshake_proof = ProtoField.bytes("ay.handshake.proof", "Proof (HMAC-SHA256)"),
}
ay.fields = f

local e = {
    not_frame = ProtoExpert.new("ay.not_frame", "Not an ayudantia frame (bad magic or version)",
        expert.group.MALFORMED, expert.severity.ERROR),
    reserved_flags = ProtoExpert.new("ay.reserved_flags.set", "Reserved flag bits set",
        expert.group.MALFORMED, expert.severity.ERROR),
    bad_refusal = ProtoExpert.new("ay.refusal.bad", "Malformed refusal frame",
        expert.group.MALFORMED, expert.severity.ERROR),
    short_signed = ProtoExpert.new("ay.tag.short", "Signed frame shorter than its 32-byte tag",
        expert.group.MALFORMED, expert.severity.ERROR),
    too_large = ProtoExpert.new("ay.length.large",
        "Declared length above 64 MiB (the default max_message): not reassembled",
        expert.group.MALFORMED, expert.severity.WARN),
    codec_changed = ProtoExpert.new("ay.codec.changed", "Codec or encoding changed inside a message",
        expert.group.MALFORMED, expert.severity.ERROR),
    compressed = ProtoExpert.new("ay.compressed.note", "Compressed data: not inflated here",
        expert.group.COMMENTS_GROUP, expert.severity.NOTE),
}
ay.experts = { e.not_frame, e.reserved_flags, e.bad_refusal, e.short_signed, e.too_large,
    e.codec_changed, e.compressed }

local tcp_stream = Field.new("tcp.stream")

-- Per direction of each TCP stream: the message being received (frames so far, bytes).
local directions = {}
-- Per frame (packet number and where in it): what the first pass worked out.
local results = {}

function ay.init()
    directions = {}
    results = {}
end

local function direction_key(pinfo)
    local stream = tcp_stream()
    return tostring(stream and stream.value or "?") .. ":" .. tostring(pinfo.src_port) .. ">"
        .. tostring(pinfo.dst_port)
end

local function subdissector(name)
    local ok, d = pcall(Dissector.get, name)
    if ok then return d end
    return nil
end

local payload_dissectors = {
    [1] = subdissector("json"),
    [3] = subdissector("msgpack"),
    [64] = subdissector("cbor"),
}

-- Whether the bytes at offset start a frame: magic "AY" and version 1.
local function is_frame(tvb, offset)
    return tvb:len() - offset >= 3 and tvb(offset, 2):uint() == 0x4159
        and tvb(offset + 2, 1):uint() == 1
end

-- Whether the bytes at offset could start one: a frame's first bytes, however few arrived
-- (a header split after "A" or "AY" still reassembles).
local function may_be_frame(tvb, offset)
    local n = tvb:len() - offset
    if n >= 3 then return is_frame(tvb, offset) end
    local magic = { 0x41, 0x59 }
    for i = 0, n - 1 do
        if tvb(offset + i, 1):uint() ~= magic[i + 1] then return false end
    end
    return n > 0
end

-- dissect_tcp_pdus' length function: a frame is its header plus its declared payload.
local function frame_length(tvb, pinfo, offset)
    local available = tvb:len() - offset
    if available < HEADER then
        return HEADER -- TCP could not bring more (the capture ends): shown as truncated
    end
    if not is_frame(tvb, offset) then
        return available -- not a frame: the rest of this segment goes as one unknown block
    end
    local length = tvb(offset + 6, 4):uint()
    if length > MAX_FRAME then
        return available -- a lying header: shown, never waited for
    end
    return HEADER + length
end

-- What a frame means for its direction's message; worked out once, in capture order.
local function track(pinfo, tvb, codec, flags, encoding, data_len, data_off)
    local key = direction_key(pinfo)
    local d = directions[key]
    if d == nil then
        d = { frames = 0, length = 0 }
        directions[key] = d
    end
    local r = {}
    local changed = d.frames > 0 and (d.codec ~= codec or d.encoding ~= encoding)
    if d.frames == 0 then
        d.codec, d.encoding, d.kept = codec, encoding, (payload_dissectors[codec] ~= nil
            and encoding == 0) and ByteArray.new() or nil
    end
    d.frames = d.frames + 1
    d.length = d.length + data_len
    r.frame = d.frames
    r.changed = changed
    if d.kept ~= nil then
        if d.length <= MAX_KEPT then
            d.kept:append(tvb(data_off, data_len):bytes())
        else
            d.kept = nil
        end
    end
    if bit.band(flags, FLAG_MORE) == 0 then
        r.last = true
        r.frames, r.length, r.codec, r.kept = d.frames, d.length, d.codec, d.kept
        d.frames, d.length, d.kept = 0, 0, nil
    end
    return r
end

-- Which frame of which packet is being dissected: packet number, offset and length.
local pdu_id = ""

-- The Info column: this packet's frames, one after another. Kept here and set whole each
-- time, because the JSON dissector called for a payload writes its own name there.
-- A packet dissected again (the GUI does, when a packet is clicked) starts over. TCP
-- calls this dissector once for a frame it reassembled and again for the rest of the
-- segment, and fences the column in between: the second call's text goes after the fence.
local info_packet, info_text, info_seen, info_after = -1, "", {}, false

local function info_begin(pinfo)
    if info_packet == pinfo.number then
        info_after = info_after or info_text ~= ""
        info_text = ""
    end
end

local function info(pinfo, text)
    local at = pdu_id
    if info_packet ~= pinfo.number or info_seen[at] then
        info_packet, info_text, info_seen, info_after = pinfo.number, "", {}, false
    end
    info_seen[at] = true
    if info_text == "" then
        info_text = (info_after and "; " or "") .. text
    else
        info_text = info_text .. "; " .. text
    end
    pinfo.cols.info:set(info_text)
end

local function show_payload(codec, tvb, pinfo, tree)
    local dissector = payload_dissectors[codec]
    if dissector ~= nil then
        pcall(function() dissector:call(tvb, pinfo, tree) end)
    end
end

-- One frame (or, when the stream is not frames, one block of bytes); returns its length.
local function dissect_frame(tvb, pinfo, tree)
    local total = tvb:len()
    local id = tostring(pinfo.number) .. "/" .. tostring(tvb:offset()) .. "/" .. tostring(total)
    pdu_id = id
    if total == 0 then
        return 0
    end
    if total < HEADER and may_be_frame(tvb, 0) then
        tree:add(ay, tvb(), "Ayudantia frame (truncated header)")
        info(pinfo, "[truncated header]")
        return total
    end
    if not is_frame(tvb, 0) then
        local t = tree:add(ay, tvb(), "Ayudantia: not a frame")
        t:add_proto_expert_info(e.not_frame)
        info(pinfo, "[not a frame]")
        return total
    end
    local codec = tvb(3, 1):uint()
    local flags = tvb(4, 1):uint()
    local encoding = tvb(5, 1):uint()
    local length = tvb(6, 4):uint()
    local present = math.min(length, total - HEADER)

    local t = tree:add(ay, tvb(0, HEADER + present), "Ayudantia frame")
    t:add(f.magic, tvb(0, 2))
    t:add(f.version, tvb(2, 1))
    t:add(f.codec, tvb(3, 1))
    local ft = t:add(f.flags, tvb(4, 1))
    ft:add(f.more, tvb(4, 1))
    ft:add(f.signed, tvb(4, 1))
    ft:add(f.refusal, tvb(4, 1))
    ft:add(f.reserved, tvb(4, 1))
    t:add(f.encoding, tvb(5, 1))
    local lt = t:add(f.length, tvb(6, 4))
    if length > MAX_FRAME then
        lt:add_proto_expert_info(e.too_large)
        info(pinfo, "[length " .. length .. "?]")
        return total
    end
    if bit.band(flags, 0xF8) ~= 0 then
        ft:add_proto_expert_info(e.reserved_flags)
    end
    if present < length then -- the capture ends inside this frame
        t:append_text(" (truncated)")
        info(pinfo, "[truncated frame]")
        return total
    end

    -- A refusal: reason code and a human line, never signed, codec 0, alone.
    if bit.band(flags, FLAG_REFUSAL) ~= 0 then
        t:set_text("Ayudantia refusal")
        if flags ~= FLAG_REFUSAL or codec ~= 0 or encoding ~= 0 or length < 1
            or length > MAX_REFUSAL then
            t:add_proto_expert_info(e.bad_refusal)
            info(pinfo, "Refusal (malformed)")
            return HEADER + length
        end
        local code = tvb(HEADER, 1):uint()
        t:add(f.refusal_reason, tvb(HEADER, 1))
        local text = ""
        if length > 1 then
            text = tvb(HEADER + 1, length - 1):string(ENC_UTF_8)
            t:add(f.refusal_text, tvb(HEADER + 1, length - 1), text)
        end
        local reason = REASONS[code] or "unknown"
        t:append_text(": " .. reason)
        info(pinfo, "Refusal " .. reason .. ": " .. text)
        return HEADER + length
    end

    -- The keyed handshake: 50-byte records shaped like a signed frame of codec 0.
    if flags == FLAG_SIGNED and codec == 0 and encoding == 0 and length == 40 then
        local label = tvb(HEADER, 8):string()
        local kind = HANDSHAKE[label]
        if kind ~= nil then
            t:set_text("Ayudantia handshake " .. kind)
            t:add(f.handshake_type, tvb(HEADER, 8), kind)
            if kind == "HELLO" then
                t:add(f.handshake_nonce, tvb(HEADER + 8, 32))
            else
                t:add(f.handshake_proof, tvb(HEADER + 8, 32))
            end
            info(pinfo, "Handshake " .. kind)
            return HEADER + length
        end
    end

    local data_len = length
    if bit.band(flags, FLAG_SIGNED) ~= 0 then
        if length < TAG then
            t:add_proto_expert_info(e.short_signed)
            info(pinfo, "[signed frame too short]")
            return HEADER + length
        end
        data_len = length - TAG
    end
    if data_len > 0 then
        t:add(f.data, tvb(HEADER, data_len))
    end
    if data_len < length then
        t:add(f.tag, tvb(HEADER + data_len, TAG))
    end
    if encoding == 1 or encoding == 2 then
        local ct = t:add(f.compressed, tvb(5, 1), true)
        ct:set_generated()
        ct:add_proto_expert_info(e.compressed)
    end

    local r = results[id]
    if r == nil then
        if pinfo.visited then
            r = {} -- a frame the first pass never saw (should not happen): header only
        else
            r = track(pinfo, tvb, codec, flags, encoding, data_len, HEADER)
            results[id] = r
        end
    end
    if r.changed then
        t:add_proto_expert_info(e.codec_changed)
    end
    local name = CODECS[codec]
    if r.frame ~= nil then
        t:add(f.message_frame, r.frame):set_generated()
    end
    local what = name .. " " .. data_len .. " B"
    if encoding ~= 0 then what = what .. " " .. ENCODINGS[encoding] end
    if bit.band(flags, FLAG_SIGNED) ~= 0 then what = what .. " signed" end
    if r.last then
        local mt = t:add(f.message_frames, r.frames)
        mt:set_generated()
        t:add(f.message_length, r.length):set_generated()
        t:set_text("Ayudantia frame, " .. name .. ", message of " .. r.frames .. " frame"
            .. (r.frames == 1 and "" or "s") .. ", " .. r.length .. " bytes")
        if encoding == 0 then
            if r.frames == 1 then
                if data_len > 0 then show_payload(codec, tvb(HEADER, data_len):tvb(), pinfo, tree) end
            elseif r.kept ~= nil and r.kept:len() > 0 then
                show_payload(codec, r.kept:tvb("Reassembled message"), pinfo, tree)
            end
        end
        if r.frames > 1 then what = what .. " (message: " .. r.frames .. " frames, " .. r.length .. " B)" end
        info(pinfo, what)
        pinfo.cols.protocol:set("AY")
    else
        t:set_text("Ayudantia frame, " .. name .. ", MORE")
        info(pinfo, what .. " MORE")
    end
    return HEADER + length
end

function ay.dissector(tvb, pinfo, tree)
    if not may_be_frame(tvb, 0) then
        return 0 -- not ours (TLS on a default port, say): other dissectors may try
    end
    pinfo.cols.protocol:set("AY")
    info_begin(pinfo)
    dissect_tcp_pdus(tvb, tree, HEADER, frame_length, dissect_frame, true)
    pinfo.cols.protocol:set("AY")
    return tvb:len()
end

local function heuristic(tvb, pinfo, tree)
    if not is_frame(tvb, 0) then
        return false
    end
    if tvb:len() >= 5 and bit.band(tvb(4, 1):uint(), 0xF8) ~= 0 then
        return false -- reserved flag bits: "AY\1" by chance, not a frame
    end
    pinfo.conversation = ay
    -- Through Dissector.call, not ay.dissector() directly: called straight from a heuristic,
    -- dissect_tcp_pdus cannot ask TCP for the rest of a frame (a 16 KiB frame across two
    -- segments came out truncated); the call spends one level of can_desegment, given back.
    local levels = pinfo.can_desegment
    pinfo.can_desegment = levels + 1
    Dissector.get("ay"):call(tvb, pinfo, tree)
    pinfo.can_desegment = levels
    return true
end

local tcp_port = DissectorTable.get("tcp.port")
for _, port in ipairs({ 4445, 4446, 12345 }) do
    tcp_port:add(port, ay)
end
ay:register_heuristic("tcp", heuristic)
