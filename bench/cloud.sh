#!/usr/bin/env bash
# Start AWS machines of the seed's kinds, run bench/fleet.sh on them, and terminate them again:
#
#   bench/cloud.sh [options] run       start, wait for SSH and cloud-init, fleet run, terminate
#   bench/cloud.sh [options] plan      (or --dry-run) print every AWS command and write every
#                                      file, calling nothing
#   bench/cloud.sh [-r REGION] [--run-id ID] [--dry-run] cleanup
#                                      terminate whatever this script's tags still mark
#
# Options (docs/cloud.md has the recipe):
#   -k, --key-name NAME    EC2 key pair the machines accept (required for run and plan)
#   -i, --identity FILE    its private key, for ssh [~/.ssh/NAME.pem]
#   -m, --machines LIST    comma-separated kinds [graviton,intel,amd,gpu]; the kinds:
#                            graviton2 c6g.2xlarge, graviton c7g.2xlarge (Graviton3),
#                            graviton4 c8g.2xlarge, intel c7i.2xlarge (Sapphire Rapids),
#                            amd c7a.2xlarge (Zen 4), gpu g6.xlarge (NVIDIA L4)
#   --type KIND=TYPE       another instance type for a kind (e.g. gpu=p5.48xlarge); repeatable
#   -r, --region REGION    [AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1]
#   --os ubuntu|debian     the CPU machines' image: Ubuntu 24.04 or Debian 12 [ubuntu]; the gpu
#                          kind always takes AWS's Deep Learning Base AMI (Ubuntu 24.04, driver
#                          and CUDA installed)
#   --subnet ID            launch there [the default VPC's default subnet]
#   --security-group ID    use this group (it must let you reach port 22) [a group made for
#                          the run, port 22 open to --ssh-cidr, deleted at the end]
#   --ssh-cidr CIDR        who may reach port 22 of a group made here [this machine's public
#                          address, from checkip.amazonaws.com, /32]
#   --boot-timeout SECONDS how long a machine has to answer SSH with cloud-init done [900]
#   -t SECONDS             bench/fleet.sh's time per machine [1800]
#   --max-hours HOURS      each machine powers itself off (and so is terminated) after this
#                          long, whatever happens here [3]
#   -o OUT                 the folder of everything written [cloud-<UTC date>]
#   --run-id ID            the run's tag value [cloud-<UTC date>-<random>]
#   --dry-run              the same as the plan command
#
# Writes OUT/cloud-init/KIND.yaml (the user data of each machine), OUT/plan.sh (every AWS
# command, in order, as it was or would be run), OUT/hosts (bench/fleet.sh's HOSTS file),
# OUT/ssh_config, and, from the fleet run, OUT/fleet/ (results/, logs/, report/).
#
# Every instance, volume and security group carries the tag ferrogpt-bench=RUN_ID; on any exit
# (done, failed, Ctrl-C, kill) the run's instances are terminated and its group deleted.
#
# Exit status: 0 every machine gave results; 1 some did (the report has them); 2 wrong
# arguments, or no machine gave results; 3 AWS or the machines failed before any benchmark ran.
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
stamp=$(date -u +%Y-%m-%dT%H%MZ)
TAG=ferrogpt-bench

die() { echo "cloud: $*" >&2; exit 2; }

# The kinds: instance type, architecture (the SSM parameters' spelling) and what it is.
kind_type() {
    case $1 in
        graviton2) echo c6g.2xlarge ;; graviton) echo c7g.2xlarge ;; graviton4) echo c8g.2xlarge ;;
        intel) echo c7i.2xlarge ;; amd) echo c7a.2xlarge ;; gpu) echo g6.xlarge ;;
        *) return 1 ;;
    esac
}
kind_arch() { case $1 in graviton*) echo arm64 ;; *) echo amd64 ;; esac; }
# `uname -m` on it, for fleet.sh's FERROGPT_BIN_<arch>.
uname_arch() { case $1 in arm64) echo aarch64 ;; *) echo x86_64 ;; esac; }
# The public SSM parameter that names the newest image, and the image's login user.
ami_param() { # KIND OS
    local arch; arch=$(kind_arch "$1")
    if [ "$1" = gpu ]; then
        echo /aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id
    elif [ "$2" = debian ]; then
        echo "/aws/service/debian/release/12/latest/$arch"
    else
        echo "/aws/service/canonical/ubuntu/server/24.04/stable/current/$arch/hvm/ebs-gp3/ami-id"
    fi
}
login_user() { if [ "$1" != gpu ] && [ "$2" = debian ]; then echo admin; else echo ubuntu; fi; }

# ---- arguments --------------------------------------------------------------------------------
key_name='' identity='' machines=graviton,intel,amd,gpu os=ubuntu subnet='' sg='' ssh_cidr=''
region=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}
boot_timeout=900 fleet_timeout=1800 max_hours=3 out='' run_id='' run_id_given='' dry=0 cmd=''
declare -A type_of=()
need() { if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value"; fi; }
while [ $# -gt 0 ]; do
    case $1 in
        -k|--key-name) need "$@"; key_name=$2; shift 2 ;;
        -i|--identity) need "$@"; identity=$2; shift 2 ;;
        -m|--machines) need "$@"; machines=$2; shift 2 ;;
        --type) need "$@"; [[ $2 =~ ^([a-z0-9]+)=([a-z0-9-]+\.[a-z0-9-]+)$ ]] \
                    || die "--type $2: expected KIND=TYPE, e.g. gpu=p5.48xlarge"
                kind_type "${BASH_REMATCH[1]}" >/dev/null || die "--type $2: unknown machine kind ${BASH_REMATCH[1]}"
                type_of[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}; shift 2 ;;
        -r|--region) need "$@"; region=$2; shift 2 ;;
        --os) need "$@"; os=$2; shift 2 ;;
        --subnet) need "$@"; subnet=$2; shift 2 ;;
        --security-group) need "$@"; sg=$2; shift 2 ;;
        --ssh-cidr) need "$@"; ssh_cidr=$2; shift 2 ;;
        --boot-timeout) need "$@"; boot_timeout=$2; shift 2 ;;
        -t) need "$@"; fleet_timeout=$2; shift 2 ;;
        --max-hours) need "$@"; max_hours=$2; shift 2 ;;
        -o) need "$@"; out=$2; shift 2 ;;
        --run-id) need "$@"; run_id=$2; run_id_given=1; shift 2 ;;
        --dry-run) dry=1; shift ;;
        -h|--help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        run|plan|cleanup) [ -z "$cmd" ] || die "one command, got $cmd and $1"; cmd=$1; shift ;;
        *) die "unknown argument $1 (bench/cloud.sh --help)" ;;
    esac
done
[ -n "$cmd" ] || die "expected a command: run, plan or cleanup (bench/cloud.sh --help)"
[ "$cmd" != plan ] || dry=1
[[ $region =~ ^[a-z]{2}(-[a-z]+)+-[0-9]+$ ]] || die "--region $region: expected a region such as us-east-1"
[ -n "$run_id" ] || run_id=cloud-$stamp-$RANDOM
[[ $run_id =~ ^[A-Za-z0-9-]+$ ]] || die "--run-id $run_id: expected letters, digits and -"
[ -n "$out" ] || out=cloud-$stamp
[[ "$out" = /* ]] || out="$PWD/$out"
[[ "$out" != *[[:space:]]* ]] || die "-o $out: the folder's path must have no spaces (it goes into FLEET_SSH_OPTS)"

kinds=()
if [ "$cmd" != cleanup ]; then
    [ -n "$key_name" ] || die "missing --key-name: the EC2 key pair the machines accept (aws ec2 describe-key-pairs)"
    [[ $key_name =~ ^[A-Za-z0-9._@+=,-]+$ ]] || die "--key-name $key_name: expected an EC2 key pair name"
    [ -n "$identity" ] || identity=$HOME/.ssh/$key_name.pem
    [ "$os" = ubuntu ] || [ "$os" = debian ] || die "--os $os: expected ubuntu or debian"
    IFS=, read -ra kinds <<< "$machines"
    [ ${#kinds[@]} -gt 0 ] || die "--machines is empty"
    declare -A seen=()
    for k in "${kinds[@]}"; do
        kind_type "$k" >/dev/null || die "unknown machine kind '$k' (known: graviton2 graviton graviton4 intel amd gpu)"
        [ -z "${seen[$k]:-}" ] || die "machine kind $k is listed twice"
        seen[$k]=1
        [ -n "${type_of[$k]:-}" ] || type_of[$k]=$(kind_type "$k")
    done
    for n in "$boot_timeout" "$fleet_timeout" "$max_hours"; do
        [[ $n =~ ^[1-9][0-9]*$ ]] || die "$n: expected a whole number above 0 (--boot-timeout, -t, --max-hours)"
    done
    [ -z "$ssh_cidr" ] || [[ $ssh_cidr =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$ ]] || die "--ssh-cidr $ssh_cidr: expected an IPv4 CIDR such as 198.51.100.7/32"
    if [ $dry = 0 ]; then
        [ -r "$identity" ] || die "cannot read the private key $identity (-i FILE)"
        # Every architecture needs its binary before anything is paid for (fleet.sh would
        # only find out on the machine).
        for k in "${kinds[@]}"; do
            a=$(uname_arch "$(kind_arch "$k")") v=FERROGPT_BIN_$a
            if [ -z "${!v:-}" ]; then
                [ "$a" = "$(uname -m)" ] || die "machine kind $k is $a and this machine $(uname -m): set $v to a ferrogpt built for it"
                b=${FERROGPT_BIN:-$repo/target/release/ferrogpt}
            else
                b=${!v}
            fi
            [ -x "$b" ] || die "no ferrogpt binary at $b for $k (cargo build --release, or set FERROGPT_BIN / $v)"
        done
    fi
fi
if [ $dry = 0 ]; then
    command -v aws >/dev/null || die "the AWS CLI (aws) is not installed"
    [ "$cmd" = cleanup ] || command -v ssh >/dev/null || die "ssh is not installed"
fi

mkdir -p "$out" || die "cannot make $out"
plan=$out/plan.sh
[ "$cmd" = cleanup ] && plan=$out/cleanup-plan.sh
printf '#!/usr/bin/env bash\n# bench/cloud.sh %s, run %s, region %s%s\n' "$cmd" "$run_id" "$region" \
    "$([ $dry = 1 ] && echo ', dry run: nothing was called')" > "$plan"
exec 3>&1

# aws_ ARGS...: runs `aws ARGS --region REGION` and records it in the plan. In a dry run it only
# records and prints it and answers $answer (what the caller would use of the real reply).
answer=''
quote() { # ARGS...: one line a shell reads back as ARGS, quoting only where needed
    local a sep='' q="'\\''"
    for a in "$@"; do
        if [[ $a =~ ^[A-Za-z0-9_./:=,@+%-]+$ ]]; then printf '%s%s' "$sep" "$a"
        else printf "%s'%s'" "$sep" "${a//\'/$q}"; fi
        sep=' '
    done
}
aws_() {
    local line
    line=$(quote aws "$@" --region "$region")
    echo "$line" >> "$plan"
    if [ $dry = 1 ]; then
        echo "$line" >&3
        [ -z "$answer" ] || printf '%s\n' "$answer"
        return 0
    fi
    aws "$@" --region "$region"
}
note() { echo "# $*" >> "$plan"; echo "cloud: $*" >&2; }

# Terminates every instance of the run (known ids and whatever else carries its tag, in case
# one started while its id was on the way back) and deletes the group made for it.
ids=() made_sg=''
# shellcheck disable=SC2317 # run by the trap
teardown() {
    local code=$? found
    trap - EXIT INT TERM
    found=$(answer="${ids[*]}" aws_ ec2 describe-instances \
        --filters "Name=tag:$TAG,Values=$run_id" "Name=instance-state-name,Values=pending,running,stopping,stopped" \
        --query 'Reservations[].Instances[].InstanceId' --output text 2>/dev/null)
    # shellcheck disable=SC2206 # ids are single words
    local all=(${ids[@]+"${ids[@]}"} $found)
    if [ ${#all[@]} -gt 0 ]; then
        mapfile -t all < <(printf '%s\n' "${all[@]}" | sort -u)
        echo "cloud: terminating ${all[*]}" >&2
        aws_ ec2 terminate-instances --instance-ids "${all[@]}" --output text >/dev/null \
            || echo "cloud: terminate-instances failed: run bench/cloud.sh -r $region --run-id $run_id cleanup" >&2
        if [ -n "$made_sg" ]; then
            # The group can go only when no instance uses it any more.
            aws_ ec2 wait instance-terminated --instance-ids "${all[@]}" >/dev/null 2>&1 || true
        fi
    fi
    if [ -n "$made_sg" ]; then
        aws_ ec2 delete-security-group --group-id "$made_sg" >/dev/null \
            || echo "cloud: could not delete security group $made_sg: bench/cloud.sh -r $region cleanup" >&2
    fi
    exit "$code"
}

# ---- cleanup ----------------------------------------------------------------------------------
if [ "$cmd" = cleanup ]; then
    # Everything the script ever tagged, or one run's with --run-id.
    filter=Name=tag-key,Values=$TAG
    [ -z "$run_id_given" ] || filter=Name=tag:$TAG,Values=$run_id
    left=$(answer='i-0plan000000000001' aws_ ec2 describe-instances \
        --filters "$filter" "Name=instance-state-name,Values=pending,running,stopping,stopped" \
        --query 'Reservations[].Instances[].InstanceId' --output text) || { echo "cloud: describe-instances failed" >&2; exit 3; }
    # shellcheck disable=SC2206
    left=($left)
    if [ ${#left[@]} -gt 0 ]; then
        echo "cloud: terminating ${left[*]}" >&2
        aws_ ec2 terminate-instances --instance-ids "${left[@]}" --output text >/dev/null || exit 3
        aws_ ec2 wait instance-terminated --instance-ids "${left[@]}" || exit 3
    else
        echo "cloud: no instances tagged $TAG left" >&2
    fi
    groups=$(answer='sg-0plan000000000001' aws_ ec2 describe-security-groups --filters "$filter" \
        --query 'SecurityGroups[].GroupId' --output text) || exit 3
    for g in $groups; do aws_ ec2 delete-security-group --group-id "$g" || exit 3; done
    exit 0
fi

# ---- cloud-init: what each machine installs before it counts as ready --------------------------
# fleet.sh copies the ferrogpt binary, so a machine needs only its runtime: OpenBLAS for a
# binary built with the blas feature, `timeout` (coreutils), and on the GPU the CUDA libraries
# (NVRTC, cuBLAS) on the loader's path. No credentials are written: the machines call nothing
# of AWS's and are reached with the key pair only.
mkdir -p "$out/cloud-init"
for k in "${kinds[@]}"; do
    {
        echo '#cloud-config'
        echo "# bench/cloud.sh run $run_id: machine $k (${type_of[$k]}, $(kind_arch "$k"))"
        echo 'package_update: true'
        echo 'packages:'
        echo '  - libopenblas0'
        echo '  - coreutils'
        if [ "$k" = gpu ]; then
            echo 'write_files:'
            echo '  - path: /etc/ld.so.conf.d/ferrogpt-cuda.conf'
            echo '    content: |'
            echo '      /usr/local/cuda/lib64'
        fi
        echo 'runcmd:'
        echo "  # The dead man's switch: power off after $max_hours h whatever happens to the run;"
        echo '  # the instance was started with shutdown behaviour terminate.'
        echo "  - [shutdown, -P, '+$((max_hours * 60))']"
        [ "$k" != gpu ] || echo '  - [ldconfig]'
        echo '  - [touch, /var/lib/ferrogpt-cloud-ready]'
    } > "$out/cloud-init/$k.yaml"
done

trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- images ----------------------------------------------------------------------------------
declare -A ami_of=() ami_at=()
for k in "${kinds[@]}"; do
    p=$(ami_param "$k" "$os")
    if [ -z "${ami_at[$p]:-}" ]; then
        ami=$(answer="ami-0plan$(printf '%012d' ${#ami_at[@]})" aws_ ssm get-parameter --name "$p" \
            --query Parameter.Value --output text)
        [[ $ami == ami-* ]] || { echo "cloud: no image behind the SSM parameter $p in $region: $ami" >&2; exit 3; }
        ami_at[$p]=$ami
    fi
    ami_of[$k]=${ami_at[$p]}
done

# ---- network ---------------------------------------------------------------------------------
tags() { # RESOURCE-TYPE KIND
    echo "ResourceType=$1,Tags=[{Key=Name,Value=$TAG-$run_id${2:+-$2}},{Key=$TAG,Value=$run_id}${2:+,{Key=$TAG-kind,Value=$2\}}]"
}
if [ -z "$sg" ]; then
    if [ -z "$ssh_cidr" ]; then
        if [ $dry = 1 ]; then
            ssh_cidr=MY-IP/32
            note "--ssh-cidr: this machine's address from https://checkip.amazonaws.com would be used"
        else
            ip=$(curl -fsS --max-time 10 https://checkip.amazonaws.com | tr -d '[:space:]')
            [[ $ip =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || { echo "cloud: cannot find this machine's public address; give --ssh-cidr" >&2; exit 3; }
            ssh_cidr=$ip/32
        fi
    fi
    if [ -n "$subnet" ]; then
        vpc=$(answer=vpc-0plan0000000001 aws_ ec2 describe-subnets --subnet-ids "$subnet" \
            --query 'Subnets[0].VpcId' --output text) || exit 3
    else
        vpc=$(answer=vpc-0plan0000000001 aws_ ec2 describe-vpcs --filters Name=isDefault,Values=true \
            --query 'Vpcs[0].VpcId' --output text) || exit 3
    fi
    [[ $vpc == vpc-* ]] || { echo "cloud: no default VPC in $region; give --subnet or --security-group" >&2; exit 3; }
    made_sg=$(answer=sg-0plan0000000001 aws_ ec2 create-security-group --group-name "$TAG-$run_id" \
        --description "ferrogpt bench/cloud.sh run $run_id: ssh" --vpc-id "$vpc" \
        --tag-specifications "$(tags security-group '')" --query GroupId --output text) || exit 3
    sg=$made_sg
    aws_ ec2 authorize-security-group-ingress --group-id "$sg" --protocol tcp --port 22 \
        --cidr "$ssh_cidr" --output text >/dev/null || exit 3
fi

# ---- instances -------------------------------------------------------------------------------
declare -A id_of=()
for k in "${kinds[@]}"; do
    args=(ec2 run-instances --image-id "${ami_of[$k]}" --instance-type "${type_of[$k]}"
        --key-name "$key_name" --security-group-ids "$sg"
        --user-data "file://$out/cloud-init/$k.yaml"
        --instance-initiated-shutdown-behavior terminate
        --metadata-options HttpTokens=required
        --tag-specifications "$(tags instance "$k")" "$(tags volume "$k")"
        --count 1 --query 'Instances[0].InstanceId' --output text)
    [ -z "$subnet" ] || args+=(--subnet-id "$subnet")
    id=$(answer="i-0plan$(printf '%012d' ${#ids[@]})" aws_ "${args[@]}")
    [[ $id == i-* ]] || { echo "cloud: run-instances failed for $k (${type_of[$k]}): $id" >&2; exit 3; }
    ids+=("$id") id_of[$k]=$id
    echo "cloud: $k: ${type_of[$k]} $id" >&2
done
aws_ ec2 wait instance-running --instance-ids "${ids[@]}" || { echo "cloud: the instances did not reach running" >&2; exit 3; }
declare -A ip_of=()
n=0
while read -r id ip; do
    [ -n "$id" ] || continue
    ip_of[$id]=$ip
done < <(answer=$(for id in "${ids[@]}"; do n=$((n + 1)); echo "$id 198.51.100.$n"; done) \
    aws_ ec2 describe-instances --instance-ids "${ids[@]}" \
    --query 'Reservations[].Instances[].[InstanceId,PublicIpAddress]' --output text)

# ---- the fleet's files -----------------------------------------------------------------------
{
    echo "# bench/cloud.sh run $run_id; ssh options: -F $out/ssh_config"
    for k in "${kinds[@]}"; do
        ip=${ip_of[${id_of[$k]}]:-}
        [[ $ip =~ ^[0-9.]+$ ]] || { echo "cloud: $k (${id_of[$k]}) has no public address (a subnet without public IPs?)" >&2; exit 3; }
        echo "$k $(login_user "$k" "$os")@$ip"
    done
} > "$out/hosts.all" || exit 3
cat > "$out/ssh_config" <<EOF
# bench/cloud.sh run $run_id: the machines are new, their host keys are learnt on first contact
Host *
  IdentityFile $identity
  IdentitiesOnly yes
  StrictHostKeyChecking accept-new
  UserKnownHostsFile $out/known_hosts
  ServerAliveInterval 30
EOF

# ---- wait for SSH and cloud-init ------------------------------------------------------------------
ready_cmd='cloud-init status --wait >/dev/null 2>&1; test -e /var/lib/ferrogpt-cloud-ready'
if [ $dry = 1 ]; then
    cp "$out/hosts.all" "$out/hosts"
    {
        for k in "${kinds[@]}"; do
            a=$(uname_arch "$(kind_arch "$k")") v=FERROGPT_BIN_$a
            [ -n "${!v:-}" ] || [ "$a" = "$(uname -m)" ] \
                || echo "# note: a run needs $v, a ferrogpt built for $k's $a"
        done
        echo "# then, for each machine until --boot-timeout $boot_timeout s: ssh -F $out/ssh_config DEST '$ready_cmd'"
        echo "# then: FLEET_SSH_OPTS='-F $out/ssh_config' bench/fleet.sh -t $fleet_timeout -o $out/fleet $out/hosts"
        echo "# and on exit, whatever happened:"
    } >> "$plan"
    echo "cloud: dry run: wrote $plan, $out/cloud-init/, $out/hosts, $out/ssh_config" >&2
    exit 0
fi
deadline=$((SECONDS + boot_timeout))
declare -A ok=()
while :; do
    waiting=0
    while read -r label dest; do
        case $label in ''|'#'*) continue ;; esac
        [ -z "${ok[$label]:-}" ] || continue
        if ssh -F "$out/ssh_config" -o BatchMode=yes -o ConnectTimeout=10 "$dest" "$ready_cmd" </dev/null >/dev/null 2>&1; then
            ok[$label]=1
            echo "cloud: $label: ready" >&2
        else
            waiting=$((waiting + 1))
        fi
    done < "$out/hosts.all"
    if [ $waiting -eq 0 ] || [ $SECONDS -ge $deadline ]; then break; fi
    sleep 10
done
{
    head -n 1 "$out/hosts.all"
    while read -r label dest; do
        case $label in ''|'#'*) continue ;; esac
        if [ -n "${ok[$label]:-}" ]; then echo "$label $dest"; else
            echo "$label: failed: no answer over SSH with cloud-init done within $boot_timeout s" >&2
        fi
    done < "$out/hosts.all"
} > "$out/hosts"
[ ${#ok[@]} -gt 0 ] || { echo "cloud: no machine became ready" >&2; exit 3; }

# ---- the benchmark -----------------------------------------------------------------------------
FLEET_SSH_OPTS="-F $out/ssh_config" "$repo/bench/fleet.sh" -t "$fleet_timeout" -o "$out/fleet" "$out/hosts"
code=$?
[ ${#ok[@]} -eq ${#kinds[@]} ] || [ $code -ne 0 ] || code=1
[ $code -ne 0 ] || echo "cloud: report in $out/fleet/report/index.html" >&2
[ $code -eq 0 ] || [ ! -d "$out/fleet/report" ] || echo "cloud: report (of the machines that answered) in $out/fleet/report/index.html" >&2
exit $code
