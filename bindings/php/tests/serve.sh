# Sourced by test.sh and bench.sh: runs php-fpm (4 static children, the binding preloaded:
# ffi.enable=preload, ffi.preload, opcache.preload) behind nginx, from a prefix directory.
#
#   serve PREFIX PORT <<'EOF'      # pool lines to add (env[...], php_value[...]) on stdin
#   ...
#   EOF
#   unserve PREFIX                 # stops both (TERM, then KILL after 10 s)
#
# Needs GARDENSTATE_LIB and the repository as the working directory. Sets served=1 when
# both answer, else prints their logs and sets served=0.

serve() {
    local prefix=$1 port=$2 repo user group
    repo=$(pwd)
    user=$(id -un)
    group=$(id -gn)
    local root_flag=()
    [ "$(id -u)" -eq 0 ] && root_flag=(-R) # the pool runs as the invoking user, root in CI
    mkdir -p "$prefix"
    php8.2 bindings/php/bin/preload-header.php "$GARDENSTATE_LIB" >"$prefix/gardenstate-ffi.h"
    {
        cat <<EOF
[global]
pid = $prefix/fpm.pid
error_log = $prefix/fpm.log
daemonize = no
[app]
user = $user
group = $group
listen = $prefix/fpm.sock
listen.mode = 0666
pm = static
pm.max_children = 4
clear_env = yes
env[GDS_PHP_AUTOLOAD] = $repo/bindings/php/autoload.php
catch_workers_output = yes
php_admin_value[error_log] = $prefix/php.log
php_admin_flag[log_errors] = on
php_admin_flag[display_errors] = off
php_admin_value[session.save_path] = $prefix
EOF
        cat
    } >"$prefix/fpm.conf"
    cat >"$prefix/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $prefix/nginx.pid;
error_log $prefix/nginx-error.log;
events { worker_connections 512; }
http {
    access_log off;
    client_body_temp_path $prefix/body;
    fastcgi_temp_path $prefix/fastcgi;
    proxy_temp_path $prefix/proxy;
    uwsgi_temp_path $prefix/uwsgi;
    scgi_temp_path $prefix/scgi;
    server {
        listen 127.0.0.1:$port;
        root $repo/bindings/php/tests/app;
        location ~ \.php\$ {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
            fastcgi_pass unix:$prefix/fpm.sock;
            fastcgi_read_timeout 120s;
        }
    }
}
EOF
    php-fpm8.2 "${root_flag[@]}" -F -y "$prefix/fpm.conf" \
        -d ffi.enable=preload -d ffi.preload="$prefix/gardenstate-ffi.h" \
        -d opcache.enable=1 -d opcache.preload="$repo/bindings/php/preload.php" -d opcache.preload_user="$user" \
        >"$prefix/fpm.out" 2>&1 &
    nginx -p "$prefix" -c "$prefix/nginx.conf" >"$prefix/nginx.out" 2>&1 &
    served=0
    for _ in $(seq 300); do # bounded: 30 s
        if [ -S "$prefix/fpm.sock" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            served=1
            return 0
        fi
        sleep 0.1
    done
    echo "serve: php-fpm or nginx did not start:" >&2
    cat "$prefix/fpm.out" "$prefix/fpm.log" "$prefix/nginx.out" "$prefix/nginx-error.log" >&2 2>/dev/null || true
}

_stop_pidfile() {
    local pid
    if [ -f "$1" ] && pid=$(cat "$1") && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
}

unserve() {
    _stop_pidfile "$1/nginx.pid"
    _stop_pidfile "$1/fpm.pid"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
