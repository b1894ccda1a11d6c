package cloudtrailgen

// The value pools records are drawn from. Account ids are the placeholders
// AWS documentation uses; addresses are only ever written as strings and
// come from the documentation ranges of RFC 5737 and RFC 3849.

// Marker is the substring the Elastic rule looks for in the request
// parameters; every AWS-managed quarantine policy name contains it.
const Marker = "AWSCompromisedKeyQuarantine"

// QuarantinePolicyARNs are the AWS-managed quarantine policies, V1 to V4.
var QuarantinePolicyARNs = [4]string{
	"arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantine",
	"arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2",
	"arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3",
	"arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV4",
}

// legacyPolicyName is the inline policy of the pre-2020 mechanism (sample 10).
const legacyPolicyName = "AWSExposedCredentialPolicy_DO_NOT_REMOVE"

// caseMismatchPolicyARNs differ from the quarantine policies only in case, so
// a case-insensitive match would wrongly report them.
var caseMismatchPolicyARNs = []string{
	"arn:aws:iam::aws:policy/awscompromisedkeyquarantine",
	"arn:aws:iam::aws:policy/AWSCompromisedKeyquarantineV2",
	"arn:aws:iam::aws:policy/AwsCompromisedKeyQuarantineV3",
	"arn:aws:iam::aws:policy/AWSCOMPROMISEDKEYQUARANTINEV4",
	"arn:aws:iam::aws:policy/AWSCompromisedkeyQuarantineV2",
}

var otherPolicyARNs = []string{
	"arn:aws:iam::aws:policy/AdministratorAccess",
	"arn:aws:iam::aws:policy/ReadOnlyAccess",
	"arn:aws:iam::aws:policy/SecurityAudit",
	"arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess",
	"arn:aws:iam::aws:policy/AmazonEC2FullAccess",
	"arn:aws:iam::aws:policy/IAMUserChangePassword",
	"arn:aws:iam::aws:policy/AWSCloudTrail_ReadOnlyAccess",
	"arn:aws:iam::aws:policy/job-function/ViewOnlyAccess",
	"arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
	"arn:aws:iam::aws:policy/AWSSupportAccess",
	"arn:aws:iam::aws:policy/AWSDenyAll",
	"arn:aws:iam::123456789012:policy/ci-deploy-artifacts",
	"arn:aws:iam::111122223333:policy/team/data-eng-s3-rw",
	"arn:aws:iam::444455556666:policy/KeyRotationEnforcement",
}

var accounts = []string{
	"123456789012", "111122223333", "444455556666", "777788889999",
	"210987654321", "012345678901", "098765432109", "555555555555",
}

// regions is weighted by repetition: most traffic is in us-east-1.
var regions = []string{
	"us-east-1", "us-east-1", "us-east-1", "us-east-1", "us-east-1", "us-east-1", "us-east-1", "us-east-1",
	"us-west-2", "us-west-2", "us-west-2", "us-west-2",
	"eu-west-1", "eu-west-1", "eu-west-1",
	"eu-central-1", "eu-central-1",
	"ap-southeast-2", "ap-northeast-1", "sa-east-1", "ca-central-1", "us-east-2", "ap-south-1",
}

var userNames = []string{
	"alice", "bob", "carol.nguyen", "deploy-bot", "ci-runner", "svc-backup", "terraform",
	"jenkins", "dave@example.com", "erin", "frank.obrien", "grafana-reader", "build-agent-03",
	"legacy-etl", "ops-admin", "mallory", "test-user", "pwncloud-backdoor-user", "s3-sync",
	"datadog-integration", "mobile-app-uploader", "reporting", "kim.lee", "sso-breakglass",
}

// exposedUserNames are the users AWS quarantines in generated traffic: the
// long-lived service users whose keys end up in a repository or a build
// log. No other generated event names them, as caller or as target, so
// the watch a generated quarantine opens finds nothing in the traffic
// after it: quarantines here are one in ten thousand events or more, far
// above real traffic, and a quarantined user drawn from the callers'
// pool would make a large part of every generated stream its activity.
// What a quarantined user does before and after is the planted case's
// (casefile.go), whose ground truth says it event by event.
var exposedUserNames = []string{
	"ci-deploy-legacy", "gh-actions-2019", "jenkins-s3-publisher", "backup-uploader-old", "etl-loader-v1",
	"mobile-build-signer", "terraform-bootstrap", "analytics-export", "sftp-ingest", "marketing-site-deployer",
}

var roleNames = []string{
	"ec2-instance-role", "lambda-exec-orders", "OrganizationAccountAccessRole",
	"AWSReservedSSO_AdministratorAccess_0123456789abcdef", "AWSReservedSSO_ReadOnly_fedcba9876543210",
	"eks-node-group-role", "github-actions-deploy", "DatadogIntegrationRole", "CloudWatchAgentServerRole",
	"ecsTaskExecutionRole", "AWSServiceRoleForConfig", "AWSServiceRoleForTrustedAdvisor",
	"cloudtrail-role", "aws-controltower-AuditReadOnlyRole", "stacksets-exec-9b2f6c", "karpenter-node",
}

var groupNames = []string{"admins", "developers", "readonly", "billing", "oncall", "data-eng"}

var sessionPrefixes = []string{
	"i-0", "botocore-session-", "aws-go-sdk-", "GitHubActions-", "alice@example.com-", "terraform-",
	"AWSCLI-Session-", "CloudFormation-", "1730318", "karpenter-",
}

// serviceHosts are callers of userIdentity.type AWSService (invokedBy), which
// also appear as sourceIPAddress and userAgent.
var serviceHosts = []string{
	"ec2.amazonaws.com", "lambda.amazonaws.com", "cloudformation.amazonaws.com", "config.amazonaws.com",
	"ecs-tasks.amazonaws.com", "events.amazonaws.com", "elasticloadbalancing.amazonaws.com",
	"autoscaling.amazonaws.com", "ssm.amazonaws.com", "cloudtrail.amazonaws.com", "s3.amazonaws.com",
}

var userAgents = []string{
	"aws-cli/2.18.17 md/awscrt#0.22.0 ua/2.0 os/linux#6.8.0-1016-aws md/arch#x86_64 lang/python#3.12.6 md/pyimpl#CPython cfg/retry-mode#standard md/installer#exe md/distrib#ubuntu.24 md/prompt#off md/command#iam.list-users",
	"aws-cli/2.17.60 md/awscrt#0.21.2 ua/2.0 os/macos#23.6.0 md/arch#x86_64 lang/python#3.12.6 md/pyimpl#CPython cfg/retry-mode#standard md/installer#exe md/prompt#off md/command#s3.cp",
	"aws-cli/1.33.21 md/Botocore#1.34.139 ua/2.0 os/linux#5.10.225-213.878.amzn2.x86_64 md/arch#x86_64 lang/python#3.9.16 md/pyimpl#CPython cfg/retry-mode#legacy botocore/1.34.139",
	"Boto3/1.35.49 md/Botocore#1.35.49 ua/2.0 os/linux#5.10.226-214.880.amzn2.x86_64 md/arch#x86_64 lang/python#3.11.10 md/pyimpl#CPython exec-env/AWS_Lambda_python3.11 cfg/retry-mode#legacy Botocore/1.35.49",
	"aws-sdk-go-v2/1.32.2 ua/2.1 os/linux lang/go#1.23.2 md/GOOS#linux md/GOARCH#amd64 api/s3#1.66.0 m/E,Z,g",
	"aws-sdk-go/1.55.5 (go1.22.8; linux; amd64) exec-env/AWS_ECS_EC2",
	"APN/1.0 HashiCorp/1.0 Terraform/1.9.8 (+https://www.terraform.io) terraform-provider-aws/5.73.0 (+https://registry.terraform.io/providers/hashicorp/aws) aws-sdk-go-v2/1.32.2 ua/2.1 os/linux lang/go#1.23.2 md/GOOS#linux md/GOARCH#amd64 api/iam#1.37.2",
	"aws-sdk-java/2.28.29 Linux/5.10.226-214.879.amzn2.x86_64 OpenJDK_64-Bit_Server_VM/17.0.13+11-LTS Java/17.0.13 vendor/Amazon.com_Inc. md/internal exec-env/AWS_ECS_FARGATE io/sync http/Apache cfg/retry-mode/legacy",
	"aws-sdk-js/3.682.0 ua/2.1 os/linux#5.10.226-214.880.amzn2.x86_64 lang/js md/nodejs#20.18.0 api/dynamodb#3.682.0 m/N,E,e",
	"[S3Console/0.4, aws-internal/3 aws-sdk-java/1.12.770 Linux/5.10.226-193.880.amzn2int.x86_64 OpenJDK_64-Bit_Server_VM/25.422-b05 java/1.8.0_422 vendor/Oracle_Corporation cfg/retry-mode/standard]",
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
	"Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:132.0) Gecko/20100101 Firefox/132.0",
	"console.amazonaws.com",
	"AWS Internal",
	"Datadog",
	"aws-sdk-rust/1.3.3 os/linux lang/rust/1.82.0",
	"Go-http-client/1.1",
}

var browserAgents = []string{
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
	"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
	"Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
}

// cliAgents are the callers of administrative IAM changes (near misses).
var cliAgents = userAgents[:9]

// markerAgents are user agents that carry the marker, for MarkerOutsideParams.
var markerAgents = []string{
	"AWSCompromisedKeyQuarantine-Remediator/1.2 aws-sdk-go-v2/1.32.2 ua/2.1 os/linux lang/go#1.23.2",
	"Boto3/1.35.49 md/Botocore#1.35.49 ua/2.0 exec-env/AWS_Lambda_python3.12 app/AWSCompromisedKeyQuarantineV2-cleanup",
}

// markerRoles are role names that carry the marker, for MarkerOutsideParams.
var markerRoles = []string{"AWSCompromisedKeyQuarantineResponder", "SecOps-AWSCompromisedKeyQuarantine-Review"}

var legacyAgents = []string{
	"aws-internal/3 aws-sdk-java/1.11.706 Linux/4.9.184-0.1.ac.235.83.329.metal1.x86_64 OpenJDK_64-Bit_Server_VM/25.242-b08 java/1.8.0_242 vendor/Oracle_Corporation",
	"aws-internal/3 aws-sdk-java/1.11.432 Linux/4.9.124-0.1.ac.198.71.329.metal1.x86_64 OpenJDK_64-Bit_Server_VM/25.192-b12 java/1.8.0_192",
}

var errorsNoise = [][2]string{
	{"AccessDenied", "User: arn:aws:sts::123456789012:assumed-role/github-actions-deploy/GitHubActions is not authorized to perform: iam:ListRoles on resource: arn:aws:iam::123456789012:role/ because no identity-based policy allows the iam:ListRoles action"},
	{"Client.UnauthorizedOperation", "You are not authorized to perform this operation. User: arn:aws:iam::111122223333:user/ci-runner is not authorized to perform: ec2:DescribeInstances because no identity-based policy allows the ec2:DescribeInstances action"},
	{"ThrottlingException", "Rate exceeded"},
	{"NoSuchEntityException", "The role with name cloudtrail-role cannot be found."},
	{"AccessDeniedException", "User: arn:aws:sts::444455556666:assumed-role/lambda-exec-orders/orders-api is not authorized to perform: kms:Decrypt on this resource because the resource does not exist in this Region, no resource-based policies allow access, or a resource-based policy explicitly denies access"},
	{"NoSuchKey", "The specified key does not exist."},
	{"ResourceNotFoundException", "Secrets Manager can't find the specified secret."},
	{"ValidationException", "1 validation error detected: Value null at 'logStreamName' failed to satisfy constraint: Member must not be null"},
}

var errorsQuarantine = [][2]string{
	{"AccessDenied", "User: arn:aws:sts::123456789012:assumed-role/a-role/user.name is not authorized to perform: iam:AttachUserPolicy on resource: user test-user with an explicit deny in a service control policy"},
	{"NoSuchEntityException", "The user with name test-user cannot be found."},
	{"LimitExceededException", "Cannot exceed quota for PoliciesPerUser: 10"},
	{"ServiceFailure", "Service failure"},
	{"ConcurrentModificationException", "Rate exceeded for modifications of user test-user"},
}

var buckets = []string{
	"acme-prod-logs", "acme-data-lake-raw", "website-assets-eu", "terraform-state-123456789012",
	"cloudtrail-logs-org-o-abc123", "ml-training-sets", "customer-exports", "backup-vault-eu-west-1",
}

var objectKeys = []string{
	"AWSLogs/123456789012/CloudTrail/us-east-1/2024/10/30/123456789012_CloudTrail_us-east-1_20241030T2005Z_a1b2c3d4e5f6a7b8.json.gz",
	"raw/events/year=2024/month=10/day=30/part-00017-7f1c2a9e-5b0d-4d8a-9f5e-1b2c3d4e5f60.c000.snappy.parquet",
	"static/js/main.8f3c2a1b.chunk.js",
	"env:/prod/terraform.tfstate",
	"exports/2024-10-30/orders.csv",
	"données/été-2024/rapport-trimestriel.pdf",
	"画像/2024/表紙.png",
	"models/resnet50/checkpoint-12000/pytorch_model.bin",
}

var functionNames = []string{"orders-api", "thumbnailer", "cost-report-daily", "slack-notifier", "cfn-custom-resource", "edge-auth"}
var tableNames = []string{"orders", "sessions", "feature-flags", "terraform-locks", "idempotency-keys"}
var logGroups = []string{"/aws/lambda/orders-api", "/aws/ecs/checkout", "/aws/eks/prod/cluster", "/var/log/messages", "API-Gateway-Execution-Logs_a1b2c3d4e5/prod"}
var parameterNames = []string{"/prod/app/db_host", "/prod/app/db_user", "/prod/app/feature_flags", "/shared/vpc/id", "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64", "/staging/app/redis_url"}
var secretNames = []string{"prod/db/orders", "prod/stripe/api", "staging/app/session-key", "rds!db-1a2b3c4d"}
var repoNames = []string{"checkout", "orders-api", "base/python", "ml/trainer"}
var tagKeys = []string{"Name", "Environment", "Owner", "CostCenter", "Project", "ManagedBy", "aws:cloudformation:stack-name", "Beschreibung"}
var tagValues = []string{"prod", "staging", "web-1", "platform-team", "cc-4711", "terraform", "checkout", "Überwachung der Zahlungsdienste", "コスト管理", "données clients"}
var instanceTypes = []string{"t3.micro", "t3.large", "m6i.xlarge", "c7g.2xlarge", "r6a.large", "g5.xlarge"}
var s3Actions = []string{"s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:DeleteObject", "s3:GetBucketLocation"}
var iamActions = []string{"ec2:DescribeInstances", "ec2:StartInstances", "logs:CreateLogStream", "logs:PutLogEvents", "kms:Decrypt", "sqs:SendMessage", "dynamodb:GetItem", "dynamodb:Query", "sts:AssumeRole", "ssm:GetParameter"}
