package cloudtrailgen

import "slices"

// A record is made in two steps: plan draws every choice that more than one
// shape needs (who called what, ids, errors, escapes) into an eventState,
// then appendCloudTrail writes the JSON from it. The ECS shape reads the
// same state, so the normalised document agrees with its event.original.

type field uint8

// The top-level fields of a CloudTrail record, in the order CloudTrail
// writes them.
const (
	fNone field = iota
	fEventVersion
	fUserIdentity
	fEventTime
	fEventSource
	fEventName
	fAwsRegion
	fSourceIPAddress
	fUserAgent
	fErrorCode
	fErrorMessage
	fRequestParameters
	fResponseElements
	fAdditionalEventData
	fRequestID
	fEventID
	fReadOnly
	fResources
	fEventType
	fManagementEvent
	fRecipientAccountID
	fSharedEventID
	fVpcEndpointID
	fEventCategory
	fServiceEventDetails
	fTLSDetails
	fSessionCredentialFromConsole
	numFields
)

var naturalOrder = func() (o [numFields - 1]field) {
	for i := range o {
		o[i] = field(i + 1)
	}
	return o
}()

// sortedOrder is the order of jq -S and of Elastic's test data (sample 03).
var sortedOrder = [numFields - 1]field{
	fAdditionalEventData, fAwsRegion, fErrorCode, fErrorMessage, fEventCategory, fEventID, fEventName,
	fEventSource, fEventTime, fEventType, fEventVersion, fManagementEvent, fReadOnly, fRecipientAccountID,
	fRequestID, fRequestParameters, fResources, fResponseElements, fServiceEventDetails,
	fSessionCredentialFromConsole, fSharedEventID, fSourceIPAddress, fTLSDetails, fUserAgent, fUserIdentity,
	fVpcEndpointID,
}

type identType uint8

const (
	idAssumedRole identType = iota
	idIAMUser
	idAWSService
	idRoot
	idFederatedUser
	idServiceEvent // AwsServiceEvent: {"accountId","invokedBy"}
)

var identNames = [...]string{"AssumedRole", "IAMUser", "AWSService", "Root", "FederatedUser", ""}

// Escape choices of an EscapedQuarantine.
const (
	escName      = 1 << iota // eventName value
	escMarker                // a character of the marker in the policy ARN
	escNameKey               // the key "eventName"
	escParamsKey             // the key "requestParameters"
	escSlash                 // "policy\/AWSCompromised..."
)

// Where MarkerOutsideParams puts the marker.
const (
	markerInAgent = iota + 1
	markerInRole
	markerInResponse
)

type eventState struct {
	kind    Kind
	id      string
	op      *operation
	ms      int64
	sec     int64
	size    int // target size of the record in bytes
	region  string
	account string
	version string
	modern  bool // eventVersion >= 1.06: managementEvent, eventCategory
	order   uint8

	itype     identType
	callerAct string
	caller    string // user or role name
	sess      []byte // role session name
	sessBuf   [40]byte
	akid      [20]byte
	pid       [21]byte
	invokedBy string
	created   int64
	mfa       bool
	ec2       bool

	ua       string
	ip       []byte
	ipBuf    [40]byte
	tls      bool
	console  bool
	vpce     bool
	shared   bool
	reqID    []byte
	reqIDBuf [36]byte

	errCode, errMsg string
	errEmpty        uint8 // 1: "errorCode":""; 2: also "errorMessage":""; 3: also "errorMessage":null

	targetKey  string // userName, roleName or groupName
	target     string
	policyArn  string
	policyName string
	markerIn   uint8
	keysSwap   bool // policyArn before userName

	esc      uint8
	escPos   [2]uint8 // which character of eventName / the marker is escaped
	escUpper bool
}

// Record size model: targets are log-normal (median 800 B, sigma 0.62), so
// most records are near their operation's natural size, about 1–1.5 KB,
// with a long tail. The distribution is a table of its quantiles rather
// than math.Exp of a normal draw, so a seed gives the same records on every
// architecture (float rounding and fused multiply-adds differ).
var sizeQuantiles = [...]int{
	154, 196, 223, 243, 260, 276, 290, 303, 315, 327, 338, 348, 358, 368, 378, 387,
	397, 406, 415, 423, 432, 441, 449, 457, 466, 474, 482, 490, 498, 506, 515, 523,
	531, 539, 547, 555, 563, 571, 579, 587, 595, 603, 611, 619, 628, 636, 644, 652,
	661, 669, 678, 686, 695, 704, 712, 721, 730, 739, 748, 757, 767, 776, 786, 795,
	805, 815, 825, 835, 845, 855, 866, 877, 887, 898, 910, 921, 933, 944, 956, 969,
	981, 994, 1007, 1020, 1033, 1047, 1061, 1076, 1091, 1106, 1121, 1137, 1154, 1171, 1188, 1206,
	1225, 1244, 1264, 1284, 1305, 1327, 1350, 1374, 1399, 1425, 1453, 1481, 1512, 1544, 1578, 1614,
	1652, 1693, 1738, 1786, 1838, 1896, 1960, 2032, 2113, 2208, 2320, 2457, 2633, 2876, 3261, 4162,
}

const (
	sizeTail  = 6000 // the top quantile's bin reaches this far
	maxSingle = 4900 // a single record stays under 5 KB
)

func (g *Generator) drawSize(max int) int {
	i := g.rng.IntN(len(sizeQuantiles))
	lo, hi := sizeQuantiles[i], sizeTail
	if i+1 < len(sizeQuantiles) {
		hi = sizeQuantiles[i+1]
	}
	return min(lo+g.rng.IntN(hi-lo+1), max)
}

func pick[T any](g *Generator, s []T) T { return s[g.rng.IntN(len(s))] }

func (g *Generator) chance(p float64) bool { return g.rng.Float64() < p }

// plan draws the next event of the given kind, its size capped at max.
func (g *Generator) plan(kind Kind, max int) *eventState {
	st := &g.ev
	*st = eventState{kind: kind, id: g.nextID()}
	g.ms += int64(g.rng.IntN(21))
	st.ms = g.ms
	st.sec = floorDiv(g.ms, 1000)
	st.size = g.drawSize(max)
	switch v := g.rng.IntN(100); {
	case v < 3:
		st.version = "1.05"
	case v < 45:
		st.version = "1.08"
	case v < 75:
		st.version = "1.09"
	case v < 97:
		st.version = "1.10"
	default:
		st.version = "1.11"
	}
	st.modern = st.version != "1.05"
	switch v := g.rng.IntN(100); {
	case v < 6:
		st.order = 2 // shuffled
	case v < 20:
		st.order = 1 // sorted
	}
	st.account = pick(g, accounts)

	switch kind {
	case Noise:
		st.op = &operations[g.pickOp()]
		g.planCaller(st)
		if st.op.target != "" {
			st.targetKey = st.op.target
			st.target = g.targetName(st.targetKey)
			st.policyArn = pick(g, otherPolicyARNs)
		}
		if g.rng.IntN(100) < 4 {
			e := pick(g, errorsNoise)
			st.errCode, st.errMsg = e[0], e[1]
			if g.rng.IntN(4) == 0 {
				st.errMsg = ""
			}
		}
	case Quarantine, EmptyErrorCode, EscapedQuarantine, FailedQuarantineAttach:
		st.op = &opAttachUserPolicy
		st.targetKey, st.target = "userName", pick(g, exposedUserNames)
		st.policyArn = QuarantinePolicyARNs[g.rng.IntN(4)]
		g.planAWSInternal(st)
		switch kind {
		case EmptyErrorCode:
			st.errEmpty = uint8(1 + g.rng.IntN(3))
		case EscapedQuarantine:
			g.planEscapes(st)
		case FailedQuarantineAttach:
			e := pick(g, errorsQuarantine)
			switch v := g.rng.IntN(10); {
			case v < 7:
				st.errCode, st.errMsg = e[0], e[1]
			case v < 8:
				st.errCode = e[0]
			default:
				st.errMsg = e[1]
			}
		}
	case QuarantineDetach:
		st.op = pick(g, detachOps)
		st.targetKey = st.op.target
		st.target = g.targetName(st.targetKey)
		st.policyArn = QuarantinePolicyARNs[g.rng.IntN(4)]
		g.planAdmin(st)
	case QuarantineRoleOrGroupAttach:
		st.op = &opAttachRolePolicy
		if g.rng.IntN(2) == 0 {
			st.op = &opAttachGroupPolicy
		}
		st.targetKey = st.op.target
		st.target = g.targetName(st.targetKey)
		st.policyArn = QuarantinePolicyARNs[g.rng.IntN(4)]
		g.planAdmin(st)
	case LegacyInlineQuarantine:
		st.op = &opPutUserPolicy
		st.targetKey, st.target = "userName", pick(g, exposedUserNames)
		st.policyName = legacyPolicyName
		st.version = "1.05"
		st.modern = false
		// The caller is the compromised user itself (sample 10).
		st.itype, st.caller, st.callerAct = idIAMUser, st.target, st.account
		g.planKeys(st)
		st.ua = pick(g, legacyAgents)
		st.ip = g.docIP(st.ipBuf[:0])
	case OtherPolicyAttach, MarkerOutsideParams, CaseMismatch:
		st.op = &opAttachUserPolicy
		st.targetKey, st.target = "userName", pick(g, userNames)
		st.policyArn = pick(g, otherPolicyARNs)
		g.planAdmin(st)
		switch kind {
		case CaseMismatch:
			st.policyArn = pick(g, caseMismatchPolicyARNs)
		case MarkerOutsideParams:
			st.markerIn = uint8(1 + g.rng.IntN(3))
			switch st.markerIn {
			case markerInAgent:
				st.ua = pick(g, markerAgents)
			case markerInRole:
				st.itype = idAssumedRole
				st.caller = pick(g, markerRoles)
				g.planSession(st)
				g.planKeys(st)
			}
		}
	}
	if st.op.global {
		st.region = "us-east-1"
	} else {
		st.region = pick(g, regions)
	}
	st.keysSwap = g.rng.IntN(2) == 0
	st.shared = st.op.shared && g.rng.IntN(3) == 0
	st.vpce = st.itype != idAWSService && st.itype != idServiceEvent && g.rng.IntN(25) == 0
	if st.op.s3ID {
		st.reqID = g.upHex(st.reqIDBuf[:0], 16)
	} else {
		st.reqID = g.uuid(st.reqIDBuf[:0])
	}
	return st
}

func (g *Generator) pickOp() int {
	n := g.rng.IntN(g.opCum[len(g.opCum)-1])
	i, _ := slices.BinarySearch(g.opCum, n+1)
	return i
}

func (g *Generator) targetName(k string) string {
	switch k {
	case "roleName":
		return pick(g, roleNames)
	case "groupName":
		return pick(g, groupNames)
	}
	return pick(g, userNames)
}

// planCaller draws the caller of a noise event.
func (g *Generator) planCaller(st *eventState) {
	op := st.op
	if op.serviceEvent {
		st.itype, st.invokedBy = idServiceEvent, op.source
		return
	}
	if op.console {
		st.console, st.tls = true, true
		st.ua = pick(g, browserAgents)
		st.ip = g.docIP(st.ipBuf[:0])
		st.itype, st.callerAct = idIAMUser, st.account
		if g.rng.IntN(10) == 0 {
			st.itype = idRoot
		}
		st.caller = pick(g, userNames)
		g.planKeys(st)
		return
	}
	v := g.rng.IntN(100)
	if v >= 77 && v < 89 && op.svcCaller != "" {
		st.itype = idAWSService
		st.invokedBy = op.svcCaller
		if st.invokedBy == "*" {
			st.invokedBy = pick(g, serviceHosts)
		}
		st.ua, st.ip = st.invokedBy, append(st.ipBuf[:0], st.invokedBy...)
		return
	}
	switch {
	case v < 55 || v >= 77 && v < 89:
		st.itype = idAssumedRole
	case v < 77:
		st.itype = idIAMUser
	case v < 93:
		st.itype = idRoot
	default:
		st.itype = idFederatedUser
	}
	g.planPerson(st)
}

// planPerson fills a human or workload caller: names, keys, agent, address.
func (g *Generator) planPerson(st *eventState) {
	st.callerAct = st.account
	switch st.itype {
	case idAssumedRole:
		st.caller = pick(g, roleNames)
		if g.rng.IntN(10) == 0 {
			st.callerAct = pick(g, accounts) // cross-account role
		}
		g.planSession(st)
	case idIAMUser, idFederatedUser:
		st.caller = pick(g, userNames)
	}
	g.planKeys(st)
	if st.itype == idRoot || g.rng.IntN(12) == 0 {
		st.console = true
		st.ua = pick(g, browserAgents)
	} else {
		st.ua = pick(g, userAgents)
	}
	st.ip = g.docIP(st.ipBuf[:0])
	st.tls = st.version >= "1.08"
}

// planAdmin is the caller of an administrative IAM change.
func (g *Generator) planAdmin(st *eventState) {
	st.itype = idAssumedRole
	if g.rng.IntN(3) == 0 {
		st.itype = idIAMUser
	}
	g.planPerson(st)
	st.console = false
	st.ua = pick(g, cliAgents)
}

// planAWSInternal is the caller of AWS's own quarantine actions (sample 02).
func (g *Generator) planAWSInternal(st *eventState) {
	st.itype = idAssumedRole
	st.callerAct = st.account
	st.caller = pick(g, roleNames)
	g.planSession(st)
	g.planKeys(st)
	st.ua = "AWS Internal"
	if g.rng.IntN(10) < 6 {
		st.ip = append(st.ipBuf[:0], "AWS Internal"...)
	} else {
		st.ip = g.docIP(st.ipBuf[:0])
	}
	st.console = g.rng.IntN(3) == 0
}

func (g *Generator) planSession(st *eventState) {
	p := pick(g, sessionPrefixes)
	b := append(st.sessBuf[:0], p...)
	if p == "i-0" {
		b = g.hex(b, 16)
	} else {
		b = g.digits(b, 10)
	}
	st.sess = b
}

func (g *Generator) planKeys(st *eventState) {
	prefix, pfx := "ASIA", "AROA"
	if st.itype == idIAMUser && !st.console {
		prefix = "AKIA"
	}
	if st.itype == idIAMUser || st.itype == idFederatedUser {
		pfx = "AIDA"
	}
	copy(st.akid[:], prefix)
	g.keyID(st.akid[4:4], 16)
	copy(st.pid[:], pfx)
	g.keyID(st.pid[4:4], 17)
	st.created = st.sec - int64(60+g.rng.IntN(3600*6))
	st.mfa = g.rng.IntN(3) == 0
	st.ec2 = st.itype == idAssumedRole && st.sess[0] == 'i'
}

// docIP appends an address from the documentation ranges, now and then IPv6.
func (g *Generator) docIP(b []byte) []byte {
	if g.rng.IntN(20) == 0 {
		b = append(b, "2001:db8:"...)
		b = g.hex(b, 4)
		b = append(b, ':')
		b = g.hex(b, 4)
		b = append(b, "::"...)
		return g.hex(b, 3)
	}
	switch g.rng.IntN(3) {
	case 0:
		b = append(b, "192.0.2."...)
	case 1:
		b = append(b, "198.51.100."...)
	default:
		b = append(b, "203.0.113."...)
	}
	return appendInt(b, int64(1+g.rng.IntN(254)))
}

func (g *Generator) planEscapes(st *eventState) {
	switch g.rng.IntN(3) {
	case 0:
		st.esc = escName
	case 1:
		st.esc = escMarker
	default:
		st.esc = escName | escMarker
	}
	if g.rng.IntN(3) == 0 {
		st.esc |= escNameKey
	}
	if g.rng.IntN(3) == 0 {
		st.esc |= escParamsKey
	}
	if g.rng.IntN(3) == 0 {
		st.esc |= escSlash
	}
	st.escPos = [2]uint8{uint8(g.rng.IntN(len("AttachUserPolicy"))), uint8(g.rng.IntN(len(Marker)))}
	st.escUpper = g.rng.IntN(2) == 0
}

func (st *eventState) has(f field) bool {
	op := st.op
	switch f {
	case fErrorCode:
		return st.errCode != "" || st.errEmpty > 0
	case fErrorMessage:
		return st.errMsg != "" || st.errEmpty >= 2
	case fSourceIPAddress, fUserAgent, fRequestParameters, fResponseElements:
		return !op.serviceEvent
	case fAdditionalEventData:
		return op.extra != nil
	case fRequestID:
		return !op.noRequestID && !op.serviceEvent
	case fResources:
		return op.resources != nil
	case fManagementEvent, fEventCategory:
		return st.modern
	case fSharedEventID:
		return st.shared
	case fVpcEndpointID:
		return st.vpce
	case fTLSDetails:
		return st.tls
	case fSessionCredentialFromConsole:
		return st.console
	case fServiceEventDetails:
		return op.details != nil
	}
	return true
}

func (g *Generator) fieldOrder(st *eventState) []field {
	o := g.fieldOrderBuf[:]
	switch st.order {
	case 1:
		copy(o, sortedOrder[:])
	case 2:
		copy(o, naturalOrder[:])
		g.rng.Shuffle(len(o), func(i, j int) { o[i], o[j] = o[j], o[i] })
	default:
		copy(o, naturalOrder[:])
	}
	return o
}

// appendCloudTrail appends the compact JSON of the planned event. The one
// field of the operation that grows with the record (its "fill") is written
// last, with what is left of the size target, and moved into its place.
// g.paramsSpan is left holding the requestParameters value's offsets in b.
func (g *Generator) appendCloudTrail(b []byte, st *eventState) []byte {
	start := len(b)
	b = append(b, '{')
	fill, fillAt, fillFirst := st.op.fill, -1, false
	g.paramsSeen = false
	first := true
	for _, f := range g.fieldOrder(st) {
		if !st.has(f) {
			continue
		}
		if f == fill {
			fillAt, fillFirst, first = len(b), first, false
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = g.appendField(b, f, st, 0)
	}
	b = append(b, '}')
	if fillAt >= 0 {
		budget := st.size - (len(b) - start) - 24 // less the key and a little slack
		fb := g.fill[:0]
		if !fillFirst {
			fb = append(fb, ',')
		}
		fb = g.appendField(fb, fill, st, budget)
		g.fill = fb
		if fill == fRequestParameters {
			g.paramsSpan[0] += fillAt
			g.paramsSpan[1] += fillAt
		} else if g.paramsSpan[0] >= fillAt {
			g.paramsSpan[0] += len(fb)
			g.paramsSpan[1] += len(fb)
		}
		b = slices.Insert(b, fillAt, fb...)
	}
	if st.esc&escMarker != 0 {
		n := len(b)
		b = escapeMarkerIn(b, start, st)
		if g.paramsSpan[1] > start {
			g.paramsSpan[1] += len(b) - n // the marker is in the parameters
		}
	}
	return b
}

func (g *Generator) appendField(b []byte, f field, st *eventState, budget int) []byte {
	op := st.op
	switch f {
	case fEventVersion:
		b = kv(b, "eventVersion", st.version)
	case fUserIdentity:
		b = g.appendIdentity(key(b, "userIdentity"), st)
	case fEventTime:
		b = append(b, `"eventTime":"`...)
		b = g.eventTime(b, st.sec)
		b = append(b, '"')
	case fEventSource:
		b = kv(b, "eventSource", op.source)
	case fEventName:
		if st.esc&escNameKey != 0 {
			b = append(b, '"')
			b = appendEscapedAt(b, "eventName", int(st.escPos[0])%len("eventName"), st.escUpper)
			b = append(b, '"', ':')
		} else {
			b = key(b, "eventName")
		}
		if st.esc&escName != 0 {
			b = append(b, '"')
			b = appendEscapedAt(b, op.name, int(st.escPos[0]), !st.escUpper)
			b = append(b, '"')
		} else {
			b = str(b, op.name)
		}
	case fAwsRegion:
		b = kv(b, "awsRegion", st.region)
	case fSourceIPAddress:
		b = append(b, `"sourceIPAddress":"`...)
		b = append(b, st.ip...)
		b = append(b, '"')
	case fUserAgent:
		b = kv(b, "userAgent", st.ua)
	case fErrorCode:
		b = kv(b, "errorCode", st.errCode)
	case fErrorMessage:
		if st.errEmpty == 3 {
			b = append(b, `"errorMessage":null`...)
		} else {
			b = append(b, `"errorMessage":"`...)
			b = appendJSONString(b, []byte(st.errMsg))
			b = append(b, '"')
		}
	case fRequestParameters:
		if st.esc&escParamsKey != 0 {
			b = append(b, '"')
			b = appendEscapedAt(b, "requestParameters", 7, st.escUpper)
			b = append(b, '"', ':')
		} else {
			b = key(b, "requestParameters")
		}
		g.paramsSpan[0] = len(b)
		b = g.appendValue(b, op.params, st, budget)
		g.paramsSpan[1] = len(b)
		g.paramsSeen = true
	case fResponseElements:
		b = g.appendValue(key(b, "responseElements"), op.response, st, budget)
	case fAdditionalEventData:
		b = g.appendValue(key(b, "additionalEventData"), op.extra, st, budget)
	case fRequestID:
		b = append(b, `"requestID":"`...)
		b = append(b, st.reqID...)
		b = append(b, '"')
	case fEventID:
		b = kv(b, "eventID", st.id)
	case fReadOnly:
		if op.readOnly {
			b = append(b, `"readOnly":true`...)
		} else {
			b = append(b, `"readOnly":false`...)
		}
	case fResources:
		b = g.appendValue(key(b, "resources"), op.resources, st, budget)
	case fEventType:
		t := op.eventType
		if t == "" {
			t = "AwsApiCall"
		}
		b = kv(b, "eventType", t)
	case fManagementEvent:
		if op.data {
			b = append(b, `"managementEvent":false`...)
		} else {
			b = append(b, `"managementEvent":true`...)
		}
	case fRecipientAccountID:
		b = kv(b, "recipientAccountId", st.account)
	case fSharedEventID:
		b = append(b, `"sharedEventID":"`...)
		b = g.uuid(b)
		b = append(b, '"')
	case fVpcEndpointID:
		b = append(b, `"vpcEndpointId":"vpce-0`...)
		b = g.hex(b, 16)
		b = append(b, '"')
	case fEventCategory:
		if op.data {
			b = kv(b, "eventCategory", "Data")
		} else {
			b = kv(b, "eventCategory", "Management")
		}
	case fServiceEventDetails:
		b = g.appendValue(key(b, "serviceEventDetails"), op.details, st, budget)
	case fTLSDetails:
		b = append(b, `"tlsDetails":{"tlsVersion":"TLSv1.3","cipherSuite":"TLS_AES_128_GCM_SHA256","clientProvidedHostHeader":"`...)
		b = g.appendHost(b, st)
		b = append(b, `"}`...)
	case fSessionCredentialFromConsole:
		b = kv(b, "sessionCredentialFromConsole", "true")
	}
	return b
}

func (g *Generator) appendValue(b []byte, w writeFn, st *eventState, budget int) []byte {
	if w == nil {
		return append(b, "null"...)
	}
	return w(g, b, st, budget)
}

// appendHost appends the endpoint host a client called.
func (g *Generator) appendHost(b []byte, st *eventState) []byte {
	op := st.op
	svc := op.source[:len(op.source)-len(".amazonaws.com")]
	switch {
	case op.global:
		return append(b, op.source...)
	case svc == "s3":
		b = append(b, bucketOf(st)...)
		b = append(b, ".s3."...)
	default:
		b = append(b, svc...)
		b = append(b, '.')
	}
	b = append(b, st.region...)
	return append(b, ".amazonaws.com"...)
}

// bucketOf is the bucket an S3 event is about, fixed by the event's id so
// that every field of the record names the same one.
func bucketOf(st *eventState) string { return buckets[int(st.id[0])%len(buckets)] }
func keyOf(st *eventState) string    { return objectKeys[int(st.id[1])%len(objectKeys)] }

// callerArn appends the ARN of the caller.
func (g *Generator) callerArn(b []byte, st *eventState) []byte {
	switch st.itype {
	case idAssumedRole:
		b = append(b, "arn:aws:sts::"...)
		b = append(b, st.callerAct...)
		b = append(b, ":assumed-role/"...)
		b = append(b, st.caller...)
		b = append(b, '/')
		return append(b, st.sess...)
	case idIAMUser:
		b = append(b, "arn:aws:iam::"...)
		b = append(b, st.callerAct...)
		b = append(b, ":user/"...)
		return append(b, st.caller...)
	case idRoot:
		b = append(b, "arn:aws:iam::"...)
		b = append(b, st.callerAct...)
		return append(b, ":root"...)
	case idFederatedUser:
		b = append(b, "arn:aws:sts::"...)
		b = append(b, st.callerAct...)
		b = append(b, ":federated-user/"...)
		return append(b, st.caller...)
	}
	return b
}

// principalID appends userIdentity.principalId.
func principalID(b []byte, st *eventState) []byte {
	switch st.itype {
	case idAssumedRole:
		b = append(b, st.pid[:]...)
		b = append(b, ':')
		return append(b, st.sess...)
	case idRoot:
		return append(b, st.callerAct...)
	case idFederatedUser:
		b = append(b, st.callerAct...)
		b = append(b, ':')
		return append(b, st.caller...)
	}
	return append(b, st.pid[:]...)
}

func (g *Generator) appendIdentity(b []byte, st *eventState) []byte {
	switch st.itype {
	case idAWSService:
		b = append(b, `{"type":"AWSService","invokedBy":"`...)
		b = append(b, st.invokedBy...)
		return append(b, `"}`...)
	case idServiceEvent:
		b = append(b, `{"accountId":"`...)
		b = append(b, st.account...)
		b = append(b, `","invokedBy":"`...)
		b = append(b, st.invokedBy...)
		return append(b, `"}`...)
	}
	b = append(b, `{"type":"`...)
	b = append(b, identNames[st.itype]...)
	b = append(b, `","principalId":"`...)
	b = principalID(b, st)
	b = append(b, `","arn":"`...)
	b = g.callerArn(b, st)
	b = append(b, `","accountId":"`...)
	b = append(b, st.callerAct...)
	b = append(b, `","accessKeyId":"`...)
	b = append(b, st.akid[:]...)
	b = append(b, '"')
	if st.itype == idIAMUser {
		b = kv(append(b, ','), "userName", st.caller)
	}
	if st.itype == idIAMUser && !st.console && st.akid[0] == 'A' && st.akid[1] == 'K' {
		return append(b, '}')
	}
	b = append(b, `,"sessionContext":{`...)
	switch st.itype {
	case idAssumedRole, idFederatedUser:
		typ, pfx := "Role", "arn:aws:iam::"
		if st.itype == idFederatedUser {
			typ = "IAMUser"
		}
		b = append(b, `"sessionIssuer":{"type":"`...)
		b = append(b, typ...)
		b = append(b, `","principalId":"`...)
		b = append(b, st.pid[:]...)
		b = append(b, `","arn":"`...)
		b = append(b, pfx...)
		b = append(b, st.callerAct...)
		if st.itype == idFederatedUser {
			b = append(b, ":user/"...)
		} else {
			b = append(b, ":role/"...)
		}
		b = append(b, st.caller...)
		b = append(b, `","accountId":"`...)
		b = append(b, st.callerAct...)
		b = append(b, `","userName":"`...)
		b = append(b, st.caller...)
		b = append(b, `"},"webIdFederationData":{},`...)
	}
	b = append(b, `"attributes":{"creationDate":"`...)
	b = appendTime(b, st.created)
	if st.mfa {
		b = append(b, `","mfaAuthenticated":"true"}`...)
	} else {
		b = append(b, `","mfaAuthenticated":"false"}`...)
	}
	if st.ec2 {
		b = append(b, `,"ec2RoleDelivery":"2.0"`...)
	}
	return append(b, "}}"...)
}

// items appends comma-separated items while the bytes written since start
// stay within budget, and at least min of them.
func items(b []byte, start, budget, min int, item func([]byte) []byte) []byte {
	for i := 0; i < 200; i++ {
		mark := len(b)
		if i > 0 {
			b = append(b, ',')
		}
		b = item(b)
		if i >= min && len(b)-start > budget {
			return b[:mark]
		}
	}
	return b
}
