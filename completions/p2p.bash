_p2p_completion() {
    local IFS=$'
'
    COMPREPLY=( $( env COMP_WORDS="${COMP_WORDS[*]}" \
                   COMP_CWORD=$COMP_CWORD \
                   _P2P_COMPLETE=complete_bash $1 ) )
    return 0
}

complete -o default -F _p2p_completion p2p
