package cloudtrailgen

import "time"

// writeFn appends one JSON value of a record. budget is what the value may
// take when it is the operation's fill field, else 0 (write it small).
type writeFn func(g *Generator, b []byte, st *eventState, budget int) []byte

// operation is one API call as CloudTrail records it.
type operation struct {
	source, name string
	weight       int // how often it occurs in noise; 0 for the rule's own calls
	readOnly     bool
	data         bool // a data event (eventCategory Data)
	global       bool // recorded in us-east-1 whatever the caller's region
	eventType    string
	noRequestID  bool
	s3ID         bool   // S3-style 16-hex requestID
	serviceEvent bool   // AwsServiceEvent: no caller, address, agent or parameters
	console      bool   // a console sign-in
	shared       bool   // sometimes has a sharedEventID
	svcCaller    string // AWS service that may be the caller; "*" for any
	target       string // requestParameters key of an IAM policy operation's target
	fill         field  // the field that grows with the record's size target

	params, response, extra, resources, details writeFn
}

// operations is the noise mix, weighted.
var operations = []operation{
	{source: "ec2.amazonaws.com", name: "DescribeInstances", weight: 8, readOnly: true, svcCaller: "*", fill: fRequestParameters, params: pDescribeInstances},
	{source: "ec2.amazonaws.com", name: "DescribeSecurityGroups", weight: 4, readOnly: true, fill: fRequestParameters, params: pDescribeSecurityGroups},
	{source: "ec2.amazonaws.com", name: "RunInstances", weight: 1, svcCaller: "autoscaling.amazonaws.com", fill: fResponseElements, params: pRunInstances, response: rRunInstances},
	{source: "ec2.amazonaws.com", name: "CreateTags", weight: 2, svcCaller: "*", fill: fRequestParameters, params: pCreateTags, response: rEC2Return},
	{source: "s3.amazonaws.com", name: "GetObject", weight: 6, readOnly: true, data: true, s3ID: true, params: pS3Object, extra: xS3, resources: resS3},
	{source: "s3.amazonaws.com", name: "PutObject", weight: 3, data: true, s3ID: true, params: pS3Put, response: rS3Put, extra: xS3, resources: resS3},
	{source: "s3.amazonaws.com", name: "ListObjects", weight: 2, readOnly: true, data: true, s3ID: true, fill: fAdditionalEventData, params: pS3List, extra: xS3, resources: resS3Bucket},
	{source: "sts.amazonaws.com", name: "AssumeRole", weight: 6, readOnly: true, shared: true, svcCaller: "*", fill: fRequestParameters, params: pAssumeRole, response: rAssumeRole, resources: resRole},
	{source: "sts.amazonaws.com", name: "GetCallerIdentity", weight: 7, readOnly: true},
	{source: "kms.amazonaws.com", name: "Decrypt", weight: 10, readOnly: true, shared: true, svcCaller: "*", fill: fRequestParameters, params: pDecrypt, resources: resKMS},
	{source: "kms.amazonaws.com", name: "GenerateDataKey", weight: 4, readOnly: true, svcCaller: "s3.amazonaws.com", fill: fRequestParameters, params: pGenerateDataKey, resources: resKMS},
	{source: "kms.amazonaws.com", name: "RotateKey", weight: 1, serviceEvent: true, eventType: "AwsServiceEvent", resources: resKMS, details: dRotateKey},
	{source: "iam.amazonaws.com", name: "ListUsers", weight: 2, readOnly: true, global: true, fill: fRequestParameters, params: pIAMList},
	{source: "iam.amazonaws.com", name: "ListRoles", weight: 2, readOnly: true, global: true, svcCaller: "config.amazonaws.com", fill: fRequestParameters, params: pIAMList},
	{source: "iam.amazonaws.com", name: "ListPolicies", weight: 1, readOnly: true, global: true, fill: fRequestParameters, params: pIAMList},
	{source: "iam.amazonaws.com", name: "GetUser", weight: 2, readOnly: true, global: true, params: pUserName},
	{source: "iam.amazonaws.com", name: "GetRole", weight: 3, readOnly: true, global: true, svcCaller: "*", params: pRoleName},
	{source: "iam.amazonaws.com", name: "ListAttachedUserPolicies", weight: 2, readOnly: true, global: true, params: pUserName},
	{source: "iam.amazonaws.com", name: "ListAccessKeys", weight: 1, readOnly: true, global: true, params: pUserName},
	{source: "iam.amazonaws.com", name: "GetPolicyVersion", weight: 1, readOnly: true, global: true, params: pGetPolicyVersion},
	{source: "iam.amazonaws.com", name: "CreatePolicy", weight: 1, global: true, fill: fRequestParameters, params: pCreatePolicy, response: rCreatePolicy},
	{source: "iam.amazonaws.com", name: "PutRolePolicy", weight: 1, global: true, fill: fRequestParameters, params: pPutRolePolicy},
	{source: "iam.amazonaws.com", name: "AttachRolePolicy", weight: 1, global: true, target: "roleName", params: pPolicyTarget},
	{source: "lambda.amazonaws.com", name: "Invoke", weight: 6, data: true, svcCaller: "*", params: pInvoke, extra: xInvoke, resources: resLambda},
	{source: "lambda.amazonaws.com", name: "ListFunctions20150331", weight: 1, readOnly: true, params: pMaxItems},
	{source: "cloudtrail.amazonaws.com", name: "LookupEvents", weight: 2, readOnly: true, fill: fRequestParameters, params: pLookupEvents},
	{source: "logs.amazonaws.com", name: "CreateLogStream", weight: 2, svcCaller: "lambda.amazonaws.com", params: pLogStream},
	{source: "logs.amazonaws.com", name: "PutLogEvents", weight: 1, data: true, params: pLogStream},
	{source: "logs.amazonaws.com", name: "DescribeLogGroups", weight: 2, readOnly: true, params: pDescribeLogGroups},
	{source: "signin.amazonaws.com", name: "ConsoleLogin", weight: 2, global: true, console: true, noRequestID: true, eventType: "AwsConsoleSignIn", response: rConsoleLogin, extra: xConsoleLogin},
	{source: "dynamodb.amazonaws.com", name: "DescribeTable", weight: 2, readOnly: true, params: pTableName, resources: resTable},
	{source: "dynamodb.amazonaws.com", name: "GetItem", weight: 3, readOnly: true, data: true, params: pGetItem, resources: resTable},
	{source: "secretsmanager.amazonaws.com", name: "GetSecretValue", weight: 2, readOnly: true, params: pSecret},
	{source: "ssm.amazonaws.com", name: "GetParameters", weight: 3, readOnly: true, svcCaller: "ec2.amazonaws.com", fill: fRequestParameters, params: pGetParameters},
	{source: "ssm.amazonaws.com", name: "GetParameter", weight: 3, readOnly: true, params: pGetParameter},
	{source: "ecr.amazonaws.com", name: "GetAuthorizationToken", weight: 2, readOnly: true, svcCaller: "ecs-tasks.amazonaws.com"},
	{source: "ecr.amazonaws.com", name: "BatchGetImage", weight: 2, readOnly: true, svcCaller: "ecs-tasks.amazonaws.com", fill: fRequestParameters, params: pBatchGetImage},
	{source: "elasticloadbalancing.amazonaws.com", name: "DescribeTargetHealth", weight: 2, readOnly: true, params: pTargetHealth},
}

// The IAM policy operations of the rule's positives and near misses.
var (
	opAttachUserPolicy  = operation{source: "iam.amazonaws.com", name: "AttachUserPolicy", global: true, target: "userName", params: pPolicyTarget, response: rMarker}
	opAttachRolePolicy  = operation{source: "iam.amazonaws.com", name: "AttachRolePolicy", global: true, target: "roleName", params: pPolicyTarget}
	opAttachGroupPolicy = operation{source: "iam.amazonaws.com", name: "AttachGroupPolicy", global: true, target: "groupName", params: pPolicyTarget}
	opPutUserPolicy     = operation{source: "iam.amazonaws.com", name: "PutUserPolicy", global: true, target: "userName", params: pLegacyInline}
	detachOps           = []*operation{
		{source: "iam.amazonaws.com", name: "DetachUserPolicy", global: true, target: "userName", params: pPolicyTarget},
		{source: "iam.amazonaws.com", name: "DetachRolePolicy", global: true, target: "roleName", params: pPolicyTarget},
		{source: "iam.amazonaws.com", name: "DetachGroupPolicy", global: true, target: "groupName", params: pPolicyTarget},
	}
)

func pPolicyTarget(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, '{')
	if !st.keysSwap {
		b = append(kv(b, st.targetKey, st.target), ',')
	}
	b = append(b, `"policyArn":"`...)
	if st.esc&escSlash != 0 {
		b = append(b, `arn:aws:iam::aws:policy\/`...)
		b = append(b, st.policyArn[len("arn:aws:iam::aws:policy/"):]...)
	} else {
		b = append(b, st.policyArn...)
	}
	b = append(b, '"')
	if st.keysSwap {
		b = kv(append(b, ','), st.targetKey, st.target)
	}
	return append(b, '}')
}

// rMarker is AttachUserPolicy's responseElements: null, but for one
// MarkerOutsideParams variant.
func rMarker(g *Generator, b []byte, st *eventState, _ int) []byte {
	if st.markerIn != markerInResponse {
		return append(b, "null"...)
	}
	b = append(b, `{"attachedPolicy":{"policyName":"AWSCompromisedKeyQuarantineV2","policyArn":"`...)
	b = append(b, QuarantinePolicyARNs[1]...)
	return append(b, `"}}`...)
}

// legacyDocument is the inline policy of sample 10, already escaped.
const legacyDocument = `{\"Version\":\"2012-10-17\",\"Statement\":[{\"Sid\":\"Stmt1538161409\",\"Effect\":\"Deny\",\"Action\":[\"lambda:CreateFunction\",\"iam:AttachUserPolicy\",\"iam:PutUserPolicy\",\"organizations:InviteAccountToOrganization\",\"ec2:RunInstances\",\"iam:DetachUserPolicy\",\"iam:CreateUser\",\"lightsail:Create*\",\"lightsail:Update*\",\"ec2:StartInstances\",\"ec2:RequestSpotInstances\",\"iam:ChangePassword\",\"iam:CreateLoginProfile\",\"organizations:CreateOrganization\",\"organizations:CreateAccount\",\"lightsail:Delete*\",\"iam:AttachGroupPolicy\",\"iam:CreateAccessKey\",\"iam:UpdateUser\",\"iam:UpdateAccountPasswordPolicy\",\"iam:DeleteUserPolicy\",\"iam:PutUserPermissionsBoundary\",\"iam:UpdateAccessKey\",\"lightsail:DownloadDefaultKeyPair\",\"iam:CreateInstanceProfile\",\"lightsail:Start*\",\"lightsail:GetInstanceAccessDetails\",\"iam:CreateRole\",\"iam:PutGroupPolicy\",\"iam:AttachRolePolicy\"],\"Resource\":[\"*\"]}]}`

func pLegacyInline(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, `{"policyDocument":"`...)
	b = append(b, legacyDocument...)
	b = append(b, `",`...)
	b = kv(b, "userName", st.target)
	b = append(b, ',')
	b = kv(b, "policyName", st.policyName)
	return append(b, '}')
}

func pDescribeInstances(g *Generator, b []byte, st *eventState, budget int) []byte {
	start := len(b)
	b = append(b, `{"instancesSet":{"items":[`...)
	b = items(b, start, budget-110, 1, func(b []byte) []byte {
		b = append(b, `{"instanceId":"i-0`...)
		b = g.hex(b, 16)
		return append(b, `"}`...)
	})
	return append(b, `]},"filterSet":{"items":[{"name":"instance-state-name","valueSet":{"items":[{"value":"running"}]}}]}}`...)
}

func pDescribeSecurityGroups(g *Generator, b []byte, st *eventState, budget int) []byte {
	start := len(b)
	b = append(b, `{"securityGroupSet":{},"securityGroupIdSet":{"items":[`...)
	b = items(b, start, budget-120, 1, func(b []byte) []byte {
		b = append(b, `{"groupId":"sg-0`...)
		b = g.hex(b, 16)
		return append(b, `"}`...)
	})
	b = append(b, `]},"filterSet":{"items":[{"name":"vpc-id","valueSet":{"items":[{"value":"vpc-0`...)
	b = g.hex(b, 16)
	return append(b, `"}]}}]}}`...)
}

func pRunInstances(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, `{"instancesSet":{"items":[{"imageId":"ami-0`...)
	b = g.hex(b, 16)
	b = append(b, `","minCount":1,"maxCount":1}]},"instanceType":"`...)
	b = append(b, pick(g, instanceTypes)...)
	b = append(b, `","blockDeviceMapping":{},"monitoring":{"enabled":false},"disableApiTermination":false,"disableApiStop":false,"clientToken":"`...)
	b = g.uuid(b)
	b = append(b, `","tagSpecificationSet":{"items":[{"resourceType":"instance","tags":[{"key":"Name","value":"`...)
	b = append(b, pick(g, tagValues)...)
	return append(b, `"}]}]}}`...)
}

func rRunInstances(g *Generator, b []byte, st *eventState, budget int) []byte {
	start := len(b)
	b = append(b, `{"requestId":"`...)
	b = g.uuid(b)
	b = append(b, `","reservationId":"r-0`...)
	b = g.hex(b, 16)
	b = append(b, `","ownerId":"`...)
	b = append(b, st.account...)
	b = append(b, `","groupSet":{},"instancesSet":{"items":[`...)
	b = items(b, start, budget-10, 1, func(b []byte) []byte {
		b = append(b, `{"instanceId":"i-0`...)
		b = g.hex(b, 16)
		b = append(b, `","imageId":"ami-0`...)
		b = g.hex(b, 16)
		b = append(b, `","instanceState":{"code":0,"name":"pending"},"privateDnsName":"ip-10-0-`...)
		b = appendInt(b, int64(g.rng.IntN(256)))
		b = append(b, '-')
		b = appendInt(b, int64(g.rng.IntN(256)))
		b = append(b, `.ec2.internal","amiLaunchIndex":0,"productCodes":{},"instanceType":"`...)
		b = append(b, pick(g, instanceTypes)...)
		b = append(b, `","launchTime":`...)
		b = appendInt(b, st.ms)
		b = append(b, `,"placement":{"availabilityZone":"`...)
		b = append(b, st.region...)
		b = append(b, `a","tenancy":"default"},"monitoring":{"state":"disabled"},"subnetId":"subnet-0`...)
		b = g.hex(b, 16)
		b = append(b, `","vpcId":"vpc-0`...)
		b = g.hex(b, 16)
		b = append(b, `","stateReason":{"code":"pending","message":"pending"},"architecture":"x86_64","rootDeviceType":"ebs","rootDeviceName":"/dev/xvda","blockDeviceMapping":{},"virtualizationType":"hvm","hypervisor":"xen","groupSet":{"items":[{"groupId":"sg-0`...)
		b = g.hex(b, 16)
		b = append(b, `","groupName":"default"}]},"sourceDestCheck":true,"ebsOptimized":false,"enaSupport":true,"metadataOptions":{"state":"pending","httpTokens":"required","httpPutResponseHopLimit":2,"httpEndpoint":"enabled"}}`...)
		return b
	})
	return append(b, `]}}`...)
}

func pCreateTags(g *Generator, b []byte, st *eventState, budget int) []byte {
	start := len(b)
	b = append(b, `{"resourcesSet":{"items":[{"resourceId":"i-0`...)
	b = g.hex(b, 16)
	b = append(b, `"}]},"tagSet":{"items":[`...)
	b = items(b, start, budget-6, 1, func(b []byte) []byte {
		b = append(b, `{"key":"`...)
		b = append(b, pick(g, tagKeys)...)
		b = append(b, `","value":"`...)
		b = append(b, pick(g, tagValues)...)
		return append(b, `"}`...)
	})
	return append(b, `]}}`...)
}

func rEC2Return(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, `{"requestId":"`...)
	b = g.uuid(b)
	return append(b, `","_return":true}`...)
}

func s3Params(g *Generator, b []byte, st *eventState) []byte {
	b = append(b, `{"bucketName":"`...)
	b = append(b, bucketOf(st)...)
	b = append(b, `","Host":"`...)
	b = g.appendHost(b, st)
	b = append(b, `","key":"`...)
	return append(b, keyOf(st)...)
}

func pS3Object(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = s3Params(g, b, st)
	return append(b, `","x-id":"GetObject"}`...)
}

func pS3Put(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = s3Params(g, b, st)
	b = append(b, `","x-amz-server-side-encryption":"aws:kms","x-amz-server-side-encryption-aws-kms-key-id":"arn:aws:kms:`...)
	b = append(b, st.region...)
	b = append(b, ':')
	b = append(b, st.account...)
	b = append(b, ":key/"...)
	b = g.uuid(b)
	return append(b, `","x-amz-acl":"bucket-owner-full-control"}`...)
}

func rS3Put(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, `{"x-amz-server-side-encryption":"aws:kms","x-amz-version-id":"`...)
	b = g.alnum(b, 32)
	return append(b, `"}`...)
}

func pS3List(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, `{"list-type":"2","bucketName":"`...)
	b = append(b, bucketOf(st)...)
	b = append(b, `","encoding-type":"url","max-keys":"1000","prefix":"raw/events/year\u003d2024/","delimiter":"/","Host":"`...)
	b = g.appendHost(b, st)
	return append(b, `"}`...)
}

// xS3 is S3's additionalEventData; x-amz-id-2 is a long opaque token, and
// the object metadata a data event may echo grows with the size target.
func xS3(g *Generator, b []byte, st *eventState, budget int) []byte {
	start := len(b)
	b = append(b, `{"SignatureVersion":"SigV4","CipherSuite":"TLS_AES_128_GCM_SHA256","bytesTransferredIn":0,"AuthenticationMethod":"AuthHeader","x-amz-id-2":"`...)
	b = g.base64(b, 76)
	b = append(b, `","bytesTransferredOut":`...)
	b = appendInt(b, int64(g.rng.IntN(1<<24)))
	if budget-(len(b)-start) > 120 {
		b = append(b, `,"objectTags":[`...)
		b = items(b, start, budget-4, 1, func(b []byte) []byte {
			b = append(b, `{"key":"`...)
			b = append(b, pick(g, tagKeys)...)
			b = append(b, `","value":"`...)
			b = append(b, pick(g, tagValues)...)
			return append(b, `"}`...)
		})
		b = append(b, ']')
	}
	return append(b, '}')
}

func resS3(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, `[{"type":"AWS::S3::Object","ARN":"arn:aws:s3:::`...)
	b = append(b, bucketOf(st)...)
	b = append(b, '/')
	b = append(b, keyOf(st)...)
	b = append(b, `"},`...)
	return s3BucketResource(b, st)
}

func resS3Bucket(g *Generator, b []byte, st *eventState, _ int) []byte {
	return s3BucketResource(append(b, '['), st)
}

func s3BucketResource(b []byte, st *eventState) []byte {
	b = append(b, `{"accountId":"`...)
	b = append(b, st.account...)
	b = append(b, `","type":"AWS::S3::Bucket","ARN":"arn:aws:s3:::`...)
	b = append(b, bucketOf(st)...)
	return append(b, `"}]`...)
}

func pAssumeRole(g *Generator, b []byte, st *eventState, budget int) []byte {
	start := len(b)
	b = append(b, `{"roleArn":"arn:aws:iam::`...)
	b = append(b, st.account...)
	b = append(b, `:role/`...)
	b = append(b, roleNames[int(st.id[2])%len(roleNames)]...)
	b = append(b, `","roleSessionName":"`...)
	b = append(b, pick(g, sessionPrefixes)...)
	b = g.digits(b, 10)
	b = append(b, `","durationSeconds":3600`...)
	if budget-(len(b)-start) > 250 {
		// A session policy: a JSON document as a string, so full of \".
		b = append(b, `,"policy":"`...)
		b = g.policyDocument(b, start, budget-3)
		b = append(b, '"')
	}
	return append(b, '}')
}

func rAssumeRole(g *Generator, b []byte, st *eventState, _ int) []byte {
	role := roleNames[int(st.id[2])%len(roleNames)]
	b = append(b, `{"credentials":{"accessKeyId":"ASIA`...)
	b = g.keyID(b, 16)
	b = append(b, `","sessionToken":"HIDDEN_DUE_TO_SECURITY_REASONS","expiration":"`...)
	b = time.Unix(st.sec+3600, 0).UTC().AppendFormat(b, "Jan 2, 2006, 3:04:05 PM")
	b = append(b, `"},"assumedRoleUser":{"assumedRoleId":"AROA`...)
	b = g.keyID(b, 17)
	b = append(b, `:session","arn":"arn:aws:sts::`...)
	b = append(b, st.account...)
	b = append(b, ":assumed-role/"...)
	b = append(b, role...)
	return append(b, `/session"}}`...)
}

func resRole(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, `[{"accountId":"`...)
	b = append(b, st.account...)
	b = append(b, `","type":"AWS::IAM::Role","ARN":"arn:aws:iam::`...)
	b = append(b, st.account...)
	b = append(b, ":role/"...)
	b = append(b, roleNames[int(st.id[2])%len(roleNames)]...)
	return append(b, `"}]`...)
}

// policyDocument appends an IAM policy document escaped as a JSON string's
// contents, with statements while it stays within budget (counted from start).
func (g *Generator) policyDocument(b []byte, start, budget int) []byte {
	b = append(b, `{\"Version\":\"2012-10-17\",\"Statement\":[`...)
	b = items(b, start, budget-4, 1, func(b []byte) []byte {
		b = append(b, `{\"Sid\":\"Stmt`...)
		b = g.digits(b, 10)
		b = append(b, `\",\"Effect\":\"Allow\",\"Action\":[`...)
		for i, n := 0, 1+g.rng.IntN(4); i < n; i++ {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `\"`...)
			if g.rng.IntN(2) == 0 {
				b = append(b, pick(g, s3Actions)...)
			} else {
				b = append(b, pick(g, iamActions)...)
			}
			b = append(b, `\"`...)
		}
		b = append(b, `],\"Resource\":[\"arn:aws:s3:::`...)
		b = append(b, pick(g, buckets)...)
		b = append(b, `/*\"]`...)
		if g.rng.IntN(3) == 0 {
			b = append(b, `,\"Condition\":{\"StringEquals\":{\"aws:SourceAccount\":\"`...)
			b = append(b, pick(g, accounts)...)
			b = append(b, `\"}}`...)
		}
		return append(b, '}')
	})
	return append(b, `]}`...)
}

func pDecrypt(g *Generator, b []byte, st *eventState, budget int) []byte {
	start := len(b)
	b = append(b, `{"encryptionContext":{"aws:lambda:FunctionArn":"arn:aws:lambda:`...)
	b = append(b, st.region...)
	b = append(b, ':')
	b = append(b, st.account...)
	b = append(b, ":function:"...)
	b = append(b, pick(g, functionNames)...)
	b = append(b, '"')
	if budget-(len(b)-start) > 100 {
		b = append(b, ',')
		n := 0
		b = items(b, start, budget-48, 1, func(b []byte) []byte {
			n++
			b = append(b, `"aws:s3:arn:`...)
			b = appendInt(b, int64(n))
			b = append(b, `":"arn:aws:s3:::`...)
			b = append(b, pick(g, buckets)...)
			b = append(b, '/')
			return append(append(b, pick(g, objectKeys)...), '"')
		})
	}
	return append(b, `},"encryptionAlgorithm":"SYMMETRIC_DEFAULT"}`...)
}

func pGenerateDataKey(g *Generator, b []byte, st *eventState, budget int) []byte {
	start := len(b)
	b = append(b, `{"keyId":"arn:aws:kms:`...)
	b = append(b, st.region...)
	b = append(b, ':')
	b = append(b, st.account...)
	b = append(b, ":key/"...)
	b = g.uuid(b)
	b = append(b, `","encryptionContext":{`...)
	b = items(b, start, budget-22, 1, func(b []byte) []byte {
		b = append(b, `"aws:s3:arn":"arn:aws:s3:::`...)
		b = append(b, pick(g, buckets)...)
		b = append(b, '/')
		return append(append(b, pick(g, objectKeys)...), '"')
	})
	return append(b, `},"keySpec":"AES_256"}`...)
}

func resKMS(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, `[{"accountId":"`...)
	b = append(b, st.account...)
	b = append(b, `","type":"AWS::KMS::Key","ARN":"arn:aws:kms:`...)
	b = append(b, st.region...)
	b = append(b, ':')
	b = append(b, st.account...)
	b = append(b, ":key/"...)
	b = g.uuid(b)
	return append(b, `"}]`...)
}

func dRotateKey(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, `{"keyId":"`...)
	b = g.uuid(b)
	return append(b, `"}`...)
}

// pIAMList is a paged IAM list call; the pagination marker is a long
// opaque token, the fill.
func pIAMList(g *Generator, b []byte, st *eventState, budget int) []byte {
	b = append(b, `{"maxItems":100`...)
	if budget > 80 {
		b = append(b, `,"marker":"`...)
		b = g.base64(b, min(budget-40, 1200))
		b = append(b, '"')
	}
	return append(b, '}')
}

func pUserName(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, '{')
	b = kv(b, "userName", pick(g, userNames))
	return append(b, '}')
}

func pRoleName(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, '{')
	b = kv(b, "roleName", pick(g, roleNames))
	return append(b, '}')
}

func pGetPolicyVersion(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, '{')
	b = kv(b, "policyArn", pick(g, otherPolicyARNs))
	b = append(b, `,"versionId":"v`...)
	b = appendInt(b, int64(1+g.rng.IntN(9)))
	return append(b, `"}`...)
}

func pCreatePolicy(g *Generator, b []byte, st *eventState, budget int) []byte {
	start := len(b)
	b = append(b, `{"policyName":"`...)
	b = append(b, pick(g, groupNames)...)
	b = append(b, `-access","description":"Managed by Terraform","policyDocument":"`...)
	b = g.policyDocument(b, start, budget-2)
	return append(b, `"}`...)
}

func rCreatePolicy(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, `{"policy":{"policyName":"policy","policyId":"ANPA`...)
	b = g.keyID(b, 17)
	b = append(b, `","arn":"arn:aws:iam::`...)
	b = append(b, st.account...)
	b = append(b, `:policy/policy","path":"/","defaultVersionId":"v1","attachmentCount":0,"permissionsBoundaryUsageCount":0,"isAttachable":true,"createDate":"`...)
	b = time.Unix(st.sec, 0).UTC().AppendFormat(b, "Jan 2, 2006, 3:04:05 PM")
	b = append(b, `","updateDate":"`...)
	b = time.Unix(st.sec, 0).UTC().AppendFormat(b, "Jan 2, 2006, 3:04:05 PM")
	return append(b, `"}}`...)
}

func pPutRolePolicy(g *Generator, b []byte, st *eventState, budget int) []byte {
	start := len(b)
	b = append(b, `{"roleName":"`...)
	b = append(b, pick(g, roleNames)...)
	b = append(b, `","policyName":"inline-`...)
	b = g.digits(b, 6)
	b = append(b, `","policyDocument":"`...)
	b = g.policyDocument(b, start, budget-2)
	return append(b, `"}`...)
}

func pInvoke(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, `{"functionName":"arn:aws:lambda:`...)
	b = append(b, st.region...)
	b = append(b, ':')
	b = append(b, st.account...)
	b = append(b, ":function:"...)
	b = append(b, functionNames[int(st.id[3])%len(functionNames)]...)
	return append(b, `","invocationType":"Event"}`...)
}

func xInvoke(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, `{"functionVersion":"arn:aws:lambda:`...)
	b = append(b, st.region...)
	b = append(b, ':')
	b = append(b, st.account...)
	b = append(b, ":function:"...)
	b = append(b, functionNames[int(st.id[3])%len(functionNames)]...)
	return append(b, `:$LATEST"}`...)
}

func resLambda(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, `[{"accountId":"`...)
	b = append(b, st.account...)
	b = append(b, `","type":"AWS::Lambda::Function","ARN":"arn:aws:lambda:`...)
	b = append(b, st.region...)
	b = append(b, ':')
	b = append(b, st.account...)
	b = append(b, ":function:"...)
	b = append(b, functionNames[int(st.id[3])%len(functionNames)]...)
	return append(b, `"}]`...)
}

func pMaxItems(g *Generator, b []byte, st *eventState, _ int) []byte {
	return append(b, `{"maxItems":50}`...)
}

func pLookupEvents(g *Generator, b []byte, st *eventState, budget int) []byte {
	start := len(b)
	b = append(b, `{"lookupAttributes":[{"attributeKey":"EventName","attributeValue":"ConsoleLogin"}],"startTime":"`...)
	b = time.Unix(st.sec-86400, 0).UTC().AppendFormat(b, "Jan 2, 2006, 3:04:05 PM")
	b = append(b, `","endTime":"`...)
	b = time.Unix(st.sec, 0).UTC().AppendFormat(b, "Jan 2, 2006, 3:04:05 PM")
	b = append(b, `","maxResults":50`...)
	if rest := budget - (len(b) - start); rest > 60 {
		b = append(b, `,"nextToken":"`...)
		b = g.base64(b, min(rest-20, 2000))
		b = append(b, '"')
	}
	return append(b, '}')
}

func pLogStream(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, `{"logGroupName":"`...)
	b = append(b, pick(g, logGroups)...)
	b = append(b, `","logStreamName":"2024/10/30/[$LATEST]`...)
	b = g.hex(b, 32)
	return append(b, `"}`...)
}

func pDescribeLogGroups(g *Generator, b []byte, st *eventState, _ int) []byte {
	return append(b, `{"logGroupNamePrefix":"/aws/lambda/","limit":50}`...)
}

func rConsoleLogin(g *Generator, b []byte, st *eventState, _ int) []byte {
	return append(b, `{"ConsoleLogin":"Success"}`...)
}

// xConsoleLogin has the \u003d and \u0026 that CloudTrail's JSON writer
// uses for '=' and '&'.
func xConsoleLogin(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, `{"LoginTo":"https://console.aws.amazon.com/console/home?hashArgs\u003d%23\u0026isauthcode\u003dtrue\u0026state\u003dhashArgsFromTB_us-east-1_`...)
	b = g.hex(b, 16)
	if st.mfa {
		b = append(b, `","MobileVersion":"No","MFAIdentifier":"arn:aws:iam::`...)
		b = append(b, st.callerAct...)
		b = append(b, ":mfa/"...)
		if st.caller == "" {
			b = append(b, "root-account-mfa-device"...)
		} else {
			b = append(b, st.caller...)
		}
		return append(b, `","MFAUsed":"Yes"}`...)
	}
	return append(b, `","MobileVersion":"No","MFAUsed":"No"}`...)
}

func pTableName(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, `{"tableName":"`...)
	b = append(b, tableNames[int(st.id[4])%len(tableNames)]...)
	return append(b, `"}`...)
}

func pGetItem(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, `{"tableName":"`...)
	b = append(b, tableNames[int(st.id[4])%len(tableNames)]...)
	return append(b, `","key":{"pk":"HIDDEN_DUE_TO_SECURITY_REASONS","sk":"HIDDEN_DUE_TO_SECURITY_REASONS"},"consistentRead":false,"projectionExpression":"#s, total, updatedAt"}`...)
}

func resTable(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, `[{"accountId":"`...)
	b = append(b, st.account...)
	b = append(b, `","type":"AWS::DynamoDB::Table","ARN":"arn:aws:dynamodb:`...)
	b = append(b, st.region...)
	b = append(b, ':')
	b = append(b, st.account...)
	b = append(b, ":table/"...)
	b = append(b, tableNames[int(st.id[4])%len(tableNames)]...)
	return append(b, `"}]`...)
}

func pSecret(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, `{"secretId":"arn:aws:secretsmanager:`...)
	b = append(b, st.region...)
	b = append(b, ':')
	b = append(b, st.account...)
	b = append(b, ":secret:"...)
	b = append(b, pick(g, secretNames)...)
	b = append(b, '-')
	b = g.alnum(b, 6)
	return append(b, `"}`...)
}

func pGetParameters(g *Generator, b []byte, st *eventState, budget int) []byte {
	start := len(b)
	b = append(b, `{"names":[`...)
	b = items(b, start, budget-26, 1, func(b []byte) []byte {
		return str(b, pick(g, parameterNames))
	})
	return append(b, `],"withDecryption":true}`...)
}

func pGetParameter(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, '{')
	b = kv(b, "name", pick(g, parameterNames))
	return append(b, `,"withDecryption":true}`...)
}

func pBatchGetImage(g *Generator, b []byte, st *eventState, budget int) []byte {
	start := len(b)
	b = append(b, `{"repositoryName":"`...)
	b = append(b, pick(g, repoNames)...)
	b = append(b, `","registryId":"`...)
	b = append(b, st.account...)
	b = append(b, `","imageIds":[`...)
	b = items(b, start, budget-200, 1, func(b []byte) []byte {
		b = append(b, `{"imageDigest":"sha256:`...)
		b = g.hex(b, 64)
		return append(b, `"}`...)
	})
	return append(b, `],"acceptedMediaTypes":["application/vnd.docker.distribution.manifest.v2+json","application/vnd.oci.image.manifest.v1+json","application/vnd.docker.distribution.manifest.v1+prettyjws"]}`...)
}

func pTargetHealth(g *Generator, b []byte, st *eventState, _ int) []byte {
	b = append(b, `{"targetGroupArn":"arn:aws:elasticloadbalancing:`...)
	b = append(b, st.region...)
	b = append(b, ':')
	b = append(b, st.account...)
	b = append(b, ":targetgroup/"...)
	b = append(b, pick(g, repoNames[:2])...)
	b = append(b, '/')
	b = g.hex(b, 16)
	return append(b, `"}`...)
}
